/* The streaming split of an ElevenLabs event (model/el_split.c). The first two bytes choose a
 * chunk boundary, the rest is the body. Properties: fed in two chunks, one byte at a time or
 * whole, the split gives the same status, envelope and decoded audio; without audio the
 * envelope is the body; with canonical audio, envelope[0:at] + base64(audio) + envelope[at:]
 * is the body byte for byte; the audio's place is an empty JSON string in the envelope. */
#include <string.h>

#include "fuzz.h"
#include "model/el_split.h"

#define ENVELOPE_MAX 4096

struct sink {
  unsigned char *bytes;
  size_t len;
};

static bool collect(void *cls, const unsigned char *bytes, size_t len) {
  struct sink *s = cls;
  FUZZ_CHECK(len > 0 && len <= 64 * 1024);
  unsigned char *p = realloc(s->bytes, s->len + len);
  FUZZ_CHECK(p != NULL);
  memcpy(p + s->len, bytes, len);
  s->bytes = p;
  s->len += len;
  return true;
}

struct outcome {
  enum el_split_status status;
  struct sink audio;
  char *env;
  size_t env_len;
  bool has_audio, canonical;
  int64_t at, audio_len;
};

/* step 0: whole; otherwise chunks ending at cut, then of step bytes. */
static void run(const char *body, size_t len, size_t cut, size_t step, struct outcome *o) {
  memset(o, 0, sizeof *o);
  struct el_split *sp = el_split_new(ENVELOPE_MAX, collect, &o->audio);
  FUZZ_CHECK(sp != NULL);
  enum el_split_status st = EL_SPLIT_OK;
  if (step == 0) {
    st = el_split_feed(sp, body, cut);
    if (st == EL_SPLIT_OK) st = el_split_feed(sp, body + cut, len - cut);
  } else {
    for (size_t i = 0; i < len && st == EL_SPLIT_OK; i += step)
      st = el_split_feed(sp, body + i, len - i < step ? len - i : step);
  }
  if (st == EL_SPLIT_OK) st = el_split_finish(sp);
  o->status = st;
  const char *env = el_split_envelope(sp, &o->env_len);
  FUZZ_CHECK(o->env_len <= ENVELOPE_MAX && env[o->env_len] == '\0');
  o->env = malloc(o->env_len + 1);
  FUZZ_CHECK(o->env != NULL);
  memcpy(o->env, env, o->env_len + 1);
  o->has_audio = el_split_has_audio(sp);
  o->canonical = el_split_canonical(sp);
  o->at = el_split_audio_at(sp);
  o->audio_len = el_split_audio_len(sp);
  el_split_free(sp);
}

static void same(const struct outcome *a, const struct outcome *b) {
  FUZZ_CHECK(a->status == b->status);
  if (a->status != EL_SPLIT_OK) return; /* how far a failed split got depends on the chunks */
  FUZZ_CHECK(a->env_len == b->env_len && memcmp(a->env, b->env, a->env_len) == 0);
  FUZZ_CHECK(a->audio.len == b->audio.len);
  FUZZ_CHECK(a->audio.len == 0 || memcmp(a->audio.bytes, b->audio.bytes, a->audio.len) == 0);
  FUZZ_CHECK(a->has_audio == b->has_audio && a->canonical == b->canonical);
  FUZZ_CHECK(a->at == b->at && a->audio_len == b->audio_len);
}

static void release(struct outcome *o) {
  free(o->env);
  free(o->audio.bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  const char *body = (const char *)data + 2;
  size_t len = size - 2;
  size_t cut = ((size_t)data[0] << 8 | data[1]) % (len + 1);
  struct outcome whole, two, bytes;
  run(body, len, len, 0, &whole);
  run(body, len, cut, 0, &two);
  run(body, len, cut, 1, &bytes);
  same(&whole, &two);
  same(&whole, &bytes);
  if (whole.status == EL_SPLIT_OK) {
    FUZZ_CHECK((int64_t)whole.audio.len == whole.audio_len);
    if (!whole.has_audio) {
      FUZZ_CHECK(whole.at == -1 && whole.audio_len == 0);
      FUZZ_CHECK(whole.env_len == len && memcmp(whole.env, body, len) == 0);
    } else {
      FUZZ_CHECK(whole.at >= 1 && (size_t)whole.at < whole.env_len);
      FUZZ_CHECK(whole.env[whole.at - 1] == '"' && whole.env[whole.at] == '"');
    }
    if (whole.canonical) {
      size_t b64 = el_base64_len(whole.audio.len);
      FUZZ_CHECK(whole.env_len + b64 == len);
      FUZZ_CHECK(memcmp(whole.env, body, (size_t)whole.at) == 0);
      char *enc = malloc(b64 + 1);
      FUZZ_CHECK(enc != NULL);
      el_base64_encode(whole.audio.bytes, whole.audio.len, enc);
      FUZZ_CHECK(memcmp(enc, body + whole.at, b64) == 0);
      FUZZ_CHECK(memcmp(whole.env + whole.at, body + whole.at + b64, len - b64 - whole.at) == 0);
      free(enc);
    }
  }
  release(&whole);
  release(&two);
  release(&bytes);
  return 0;
}
