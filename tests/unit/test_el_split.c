/* Unit tests for model/el_split: the streaming split of an ElevenLabs event into its envelope
 * and its decoded audio, whatever the chunk boundaries; the base64 rules; the limits. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/el_split.h"

#define FIXTURE "tests/fixtures/elevenlabs/post_call_audio_small.json"

/* Fault injection (linked with -Wl,--wrap=malloc): while armed, the next malloc of the
 * splitter's audio batch (64 KiB, the size el_split.c allocates when an event's audio starts)
 * fails, and fail_batch_failed counts it; every other allocation goes through. big_mallocs
 * counts the mallocs of 64 KiB or more (the batch, or a splitter that embeds it). */
#define AUDIO_BATCH_SIZE (64 * 1024)
void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);
static bool fail_batch_armed;
static size_t fail_batch_failed, big_mallocs;

void *__wrap_malloc(size_t size) {
  if (size >= AUDIO_BATCH_SIZE) big_mallocs++;
  if (fail_batch_armed && size == AUDIO_BATCH_SIZE) {
    fail_batch_armed = false;
    fail_batch_failed++;
    return NULL;
  }
  return __real_malloc(size);
}

struct sink {
  unsigned char *bytes;
  size_t len, cap;
  size_t calls, max_call;
  size_t fail_after; /* 0: never fail */
};

static bool collect(void *cls, const unsigned char *bytes, size_t len) {
  struct sink *s = cls;
  s->calls++;
  if (len > s->max_call) s->max_call = len;
  if (s->fail_after && s->calls >= s->fail_after) return false;
  assert_true(len > 0);
  if (s->len + len > s->cap) {
    s->cap = (s->len + len) * 2;
    s->bytes = realloc(s->bytes, s->cap);
    assert_non_null(s->bytes);
  }
  memcpy(s->bytes + s->len, bytes, len);
  s->len += len;
  return true;
}

/* The outcome of one split. */
struct result {
  enum el_split_status status;
  char *env;
  size_t env_len;
  struct sink audio;
  bool has_audio, canonical;
  int64_t at, audio_len;
};

static void result_free(struct result *r) {
  free(r->env);
  free(r->audio.bytes);
  memset(r, 0, sizeof *r);
}

/* Splits body fed in chunks ending at cuts[0..ncuts) (increasing offsets). */
static struct result split_at(const char *body, size_t len, const size_t *cuts, size_t ncuts,
                              size_t env_max) {
  struct result r;
  memset(&r, 0, sizeof r);
  struct el_split *sp = el_split_new(env_max, collect, &r.audio);
  assert_non_null(sp);
  size_t pos = 0;
  r.status = EL_SPLIT_OK;
  for (size_t i = 0; i <= ncuts && r.status == EL_SPLIT_OK; i++) {
    size_t end = i < ncuts ? cuts[i] : len;
    r.status = el_split_feed(sp, body + pos, end - pos);
    pos = end;
  }
  if (r.status == EL_SPLIT_OK) r.status = el_split_finish(sp);
  /* A failed split stays failed. */
  if (r.status != EL_SPLIT_OK) {
    assert_int_equal(el_split_feed(sp, "x", 1), r.status);
    assert_int_equal(el_split_finish(sp), r.status);
  }
  size_t elen;
  const char *env = el_split_envelope(sp, &elen);
  assert_int_equal(env[elen], '\0');
  r.env = malloc(elen + 1);
  assert_non_null(r.env);
  memcpy(r.env, env, elen + 1);
  r.env_len = elen;
  r.has_audio = el_split_has_audio(sp);
  r.canonical = el_split_canonical(sp);
  r.at = el_split_audio_at(sp);
  r.audio_len = el_split_audio_len(sp);
  el_split_free(sp);
  return r;
}

static struct result split(const char *body, size_t len) {
  return split_at(body, len, NULL, 0, 1 << 20);
}
static struct result split_str(const char *body) { return split(body, strlen(body)); }

/* An independent reference decoder (strict, padded), for the expected bytes. */
static size_t ref_decode(const char *in, size_t len, unsigned char *out) {
  static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len && in[i] != '='; i++) {
    const char *p = strchr(abc, in[i]);
    assert_non_null(p);
    acc = acc << 6 | (uint32_t)(p - abc);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits);
    }
  }
  return o;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s (run from the repository root)", path);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  long n = ftell(f);
  assert_true(n > 0);
  rewind(f);
  char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  buf[n] = '\0';
  *len = (size_t)n;
  return buf;
}

/* The fixture, its full_audio contents, and the body with them cut out. */
struct fixture {
  char *body;
  size_t len;
  size_t a0, a1; /* full_audio's contents are body[a0..a1) */
  char *envelope;
  size_t env_len;
  unsigned char *audio;
  size_t audio_len;
};

static void fixture_load(struct fixture *f) {
  f->body = read_file(FIXTURE, &f->len);
  const char *k = strstr(f->body, "\"full_audio\": \"");
  assert_non_null(k);
  f->a0 = (size_t)(k - f->body) + strlen("\"full_audio\": \"");
  f->a1 = (size_t)(strchr(f->body + f->a0, '"') - f->body);
  f->env_len = f->len - (f->a1 - f->a0);
  f->envelope = malloc(f->env_len + 1);
  assert_non_null(f->envelope);
  memcpy(f->envelope, f->body, f->a0);
  memcpy(f->envelope + f->a0, f->body + f->a1, f->len - f->a1 + 1);
  f->audio = malloc(f->a1 - f->a0);
  assert_non_null(f->audio);
  f->audio_len = ref_decode(f->body + f->a0, f->a1 - f->a0, f->audio);
  assert_true(f->audio_len > 4000);
  assert_memory_equal(f->audio, "ID3", 3);
}

static void fixture_free(struct fixture *f) {
  free(f->body);
  free(f->envelope);
  free(f->audio);
}

static void assert_fixture_result(const struct fixture *f, const struct result *r) {
  assert_int_equal(r->status, EL_SPLIT_OK);
  assert_int_equal(r->env_len, f->env_len);
  assert_memory_equal(r->env, f->envelope, f->env_len);
  assert_true(r->has_audio);
  assert_true(r->canonical);
  assert_int_equal(r->at, (int64_t)f->a0);
  assert_int_equal(r->audio_len, (int64_t)f->audio_len);
  assert_int_equal(r->audio.len, f->audio_len);
  assert_memory_equal(r->audio.bytes, f->audio, f->audio_len);
}

static void fixture_one_shot(void **state) {
  (void)state;
  struct fixture f;
  fixture_load(&f);
  struct result r = split(f.body, f.len);
  assert_fixture_result(&f, &r);
  /* Canonical: the envelope and the re-encoded audio give back the body byte for byte. */
  size_t b64 = el_base64_len(r.audio.len);
  assert_int_equal(b64, f.a1 - f.a0);
  char *re = malloc(r.env_len + b64 + 1);
  assert_non_null(re);
  memcpy(re, r.env, (size_t)r.at);
  el_base64_encode(r.audio.bytes, r.audio.len, re + r.at);
  memcpy(re + r.at + b64, r.env + r.at, r.env_len - (size_t)r.at);
  assert_int_equal(r.env_len + b64, f.len);
  assert_memory_equal(re, f.body, f.len);
  free(re);
  result_free(&r);
  fixture_free(&f);
}

/* Every boundary a chunk can end at, one cut and two cuts around each audio edge. */
static void fixture_every_boundary(void **state) {
  (void)state;
  struct fixture f;
  fixture_load(&f);
  for (size_t i = 0; i <= f.len; i++) {
    size_t cut[1] = {i};
    struct result r = split_at(f.body, f.len, cut, 1, 1 << 20);
    assert_fixture_result(&f, &r);
    result_free(&r);
  }
  for (size_t i = 0; i < 8; i++) {
    for (size_t j = 0; j < 8; j++) {
      size_t cuts[2] = {f.a0 - 4 + i, f.a1 - 4 + j};
      struct result r = split_at(f.body, f.len, cuts, 2, 1 << 20);
      assert_fixture_result(&f, &r);
      result_free(&r);
    }
  }
  fixture_free(&f);
}

/* One byte at a time, and chunks of every size from 2 to 64. */
static void fixture_small_chunks(void **state) {
  (void)state;
  struct fixture f;
  fixture_load(&f);
  size_t *cuts = malloc(f.len * sizeof *cuts);
  assert_non_null(cuts);
  for (size_t step = 1; step <= 64; step++) {
    size_t n = 0;
    for (size_t c = step; c < f.len; c += step) cuts[n++] = c;
    struct result r = split_at(f.body, f.len, cuts, n, 1 << 20);
    assert_fixture_result(&f, &r);
    result_free(&r);
  }
  free(cuts);
  fixture_free(&f);
}

static void no_audio_envelope_is_body(void **state) {
  (void)state;
  static const char *const bodies[] = {
      "{\"type\":\"post_call_transcription\",\"data\":{\"conversation_id\":\"c\"}}",
      "{\"full_audio\":\"AAAA\",\"data\":{}}",                     /* not in data */
      "{\"data\":{\"x\":{\"full_audio\":\"AAAA\"}}}",              /* deeper */
      "{\"data\":[{\"full_audio\":\"AAAA\"}]}",                    /* data is not an object */
      "{\"x\":{\"data\":{\"full_audio\":\"AAAA\"}}}",              /* not the top level's data */
      "[{\"data\":{\"full_audio\":\"AAAA\"}}]",                    /* top level is not an object */
      "{\"data\":{\"full_audio\":null}}",                          /* not a string */
      "{\"data\":{\"full_audio\":[\"AAAA\"]}}",                    /* not a string */
      "{\"data\":{\"full\\u005faudio\":\"AAAA\"}}",                /* escaped key: literal only */
      "{\"d\\u0061ta\":{\"full_audio\":\"AAAA\"}}",                /* escaped data key */
      "{\"data\":{\"note\":\"\\\"full_audio\\\":\\\"AAAA\\\"\"}}", /* inside a value */
      "{\"data\":{\"full_audio_x\":\"AAAA\",\"xfull_audio\":\"AAAA\"}}",
      "{\"data\":{\"a_very_long_key_name_indeed\":\"AAAA\"}}",
      "{\"data\":{\"AAAA\":\"full_audio\"}}",
      "not json at all \"full_audio\":\"x\"",
      "",
      "}}]]{\"data\":{\"full_audio\":1}}",
  };
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
    struct result r = split_str(bodies[i]);
    assert_int_equal(r.status, EL_SPLIT_OK);
    assert_string_equal(r.env, bodies[i]);
    assert_false(r.has_audio);
    assert_false(r.canonical);
    assert_int_equal(r.at, -1);
    assert_int_equal(r.audio_len, 0);
    assert_int_equal(r.audio.calls, 0);
    result_free(&r);
  }
}

/* An empty chunk (NULL, 0), before, between and after the bytes, changes nothing: the body so far
 * is not copied from NULL (undefined behaviour, which UBSan stops on), the split goes on. */
static void empty_chunks_change_nothing(void **state) {
  (void)state;
  static const char *const bodies[] = {
      "{\"type\":\"post_call_transcription\",\"data\":{\"conversation_id\":\"c\"}}",
      "{\"data\":{\"full_audio\":\"QUJDRA==\"}}",
  };
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
    size_t len = strlen(bodies[i]), half = len / 2;
    struct sink audio;
    memset(&audio, 0, sizeof audio);
    struct el_split *sp = el_split_new(4096, collect, &audio);
    assert_non_null(sp);
    assert_int_equal(el_split_feed(sp, NULL, 0), EL_SPLIT_OK);
    assert_int_equal(el_split_feed(sp, bodies[i], half), EL_SPLIT_OK);
    assert_int_equal(el_split_feed(sp, NULL, 0), EL_SPLIT_OK);
    assert_int_equal(el_split_feed(sp, bodies[i] + half, len - half), EL_SPLIT_OK);
    assert_int_equal(el_split_feed(sp, NULL, 0), EL_SPLIT_OK);
    assert_int_equal(el_split_finish(sp), EL_SPLIT_OK);
    struct result whole = split_str(bodies[i]);
    size_t elen;
    const char *env = el_split_envelope(sp, &elen);
    assert_int_equal(elen, whole.env_len);
    assert_memory_equal(env, whole.env, elen);
    assert_int_equal(el_split_has_audio(sp), whole.has_audio);
    assert_int_equal(el_split_audio_at(sp), whole.at);
    assert_int_equal(audio.len, whole.audio.len);
    if (audio.len) assert_memory_equal(audio.bytes, whole.audio.bytes, audio.len);
    result_free(&whole);
    free(audio.bytes);
    el_split_free(sp);
  }
}

static void audio_among_other_members(void **state) {
  (void)state;
  static const char BODY[] =
      "{\"type\":\"post_call_audio\",\"x\":{\"data\":1,\"full_audio\":\"Zm9v\"},"
      "\"data\" : { \"a\":[{\"full_audio\":\"x\"}], \"b\":\"\\\"\\\\\" , "
      "\"full_audio\" : \"Zm9vYmFy\" , \"c\":{}},\"z\":\"full_audio\"}";
  struct result r = split_str(BODY);
  assert_int_equal(r.status, EL_SPLIT_OK);
  assert_string_equal(r.env,
                      "{\"type\":\"post_call_audio\",\"x\":{\"data\":1,\"full_audio\":\"Zm9v\"},"
                      "\"data\" : { \"a\":[{\"full_audio\":\"x\"}], \"b\":\"\\\"\\\\\" , "
                      "\"full_audio\" : \"\" , \"c\":{}},\"z\":\"full_audio\"}");
  assert_true(r.has_audio);
  assert_true(r.canonical);
  assert_int_equal(r.audio.len, 6);
  assert_memory_equal(r.audio.bytes, "foobar", 6);
  assert_string_equal(r.env + r.at, "\" , \"c\":{}},\"z\":\"full_audio\"}");
  result_free(&r);
}

/* The base64 rules inside full_audio. */
static void base64_rules(void **state) {
  (void)state;
  struct {
    const char *b64; /* JSON string contents */
    enum el_split_status status;
    const char *bytes; /* decoded, when OK */
    size_t len;
    bool canonical;
  } cases[] = {
      {"", EL_SPLIT_OK, "", 0, true},
      {"Zg==", EL_SPLIT_OK, "f", 1, true},
      {"Zm8=", EL_SPLIT_OK, "fo", 2, true},
      {"Zm9v", EL_SPLIT_OK, "foo", 3, true},
      {"Zm9vYg==", EL_SPLIT_OK, "foob", 4, true},
      {"+/+/", EL_SPLIT_OK, "\xfb\xff\xbf", 3, true},
      {"\\/\\/\\/\\/", EL_SPLIT_OK, "\xff\xff\xff", 3, false}, /* "\/" is '/' */
      {"Zm9\\/", EL_SPLIT_OK, "fo\x7f", 3, false},
      {"Zg", EL_SPLIT_OK, "f", 1, false}, /* unpadded tail: decoded, not canonical */
      {"Zm8", EL_SPLIT_OK, "fo", 2, false},
      {"Zh==", EL_SPLIT_OK, "f", 1, false},  /* stray bits */
      {"Zm9=", EL_SPLIT_OK, "fo", 2, false}, /* stray bits */
      {"Z", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"Zm9vY", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"Zg=", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"Z===", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"====", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"=Zm9", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"Zg=A", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"Zg==Zm9v", EL_SPLIT_BAD_AUDIO, NULL, 0, false}, /* padding in the middle */
      {"Zg===", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"Zm8==", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"Zm9v\\n", EL_SPLIT_BAD_AUDIO, NULL, 0, false}, /* other escapes */
      {"Zm9v\\u0041", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"Zm9v\\\\", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"Zm9v\\\"", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"Zm9v Zm9v", EL_SPLIT_BAD_AUDIO, NULL, 0, false}, /* whitespace */
      {"Zm9v\nZm9v", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"Zm9-", EL_SPLIT_BAD_AUDIO, NULL, 0, false}, /* base64url */
      {"Zm9_", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"Zm9v\xc3\xa9", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
      {"Zm9v.", EL_SPLIT_BAD_AUDIO, NULL, 0, false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char body[128];
    snprintf(body, sizeof body, "{\"data\":{\"full_audio\":\"%s\"}}", cases[i].b64);
    size_t blen = strlen(body);
    /* Whole, and byte by byte. */
    size_t cuts[128];
    for (size_t c = 0; c + 1 < blen; c++) cuts[c] = c + 1;
    for (int pass = 0; pass < 2; pass++) {
      struct result r = split_at(body, blen, cuts, pass ? blen - 1 : 0, 1024);
      if (r.status != cases[i].status) fail_msg("case %zu (%s): status %d", i, body, r.status);
      if (cases[i].status == EL_SPLIT_OK) {
        assert_string_equal(r.env, "{\"data\":{\"full_audio\":\"\"}}");
        assert_true(r.has_audio);
        assert_int_equal(r.at, strlen("{\"data\":{\"full_audio\":\""));
        assert_int_equal(r.audio_len, cases[i].len);
        assert_int_equal(r.audio.len, cases[i].len);
        if (cases[i].len) assert_memory_equal(r.audio.bytes, cases[i].bytes, cases[i].len);
        if (r.canonical != cases[i].canonical)
          fail_msg("case %zu (%s): canonical %d", i, body, r.canonical);
      }
      result_free(&r);
    }
  }
}

static void second_audio_is_refused(void **state) {
  (void)state;
  static const char *const bodies[] = {
      "{\"data\":{\"full_audio\":\"Zm9v\",\"full_audio\":\"Zm9v\"}}",
      "{\"data\":{\"full_audio\":\"\"},\"data\":{\"full_audio\":\"Zm9v\"}}",
  };
  for (size_t i = 0; i < 2; i++) {
    struct result r = split_str(bodies[i]);
    assert_int_equal(r.status, EL_SPLIT_BAD_AUDIO);
    result_free(&r);
  }
}

/* A body cut short inside the audio is not a whole call. */
static void unterminated_audio(void **state) {
  (void)state;
  struct result r = split_str("{\"data\":{\"full_audio\":\"Zm9v");
  assert_int_equal(r.status, EL_SPLIT_BAD_AUDIO);
  result_free(&r);
  r = split_str("{\"data\":{\"full_audio\":\"Zm9v\\");
  assert_int_equal(r.status, EL_SPLIT_BAD_AUDIO);
  result_free(&r);
}

static void envelope_limit(void **state) {
  (void)state;
  static const char BODY[] = "{\"data\":{\"full_audio\":\"Zm9vYmFy\",\"x\":\"yz\"}}";
  static const char ENV[] = "{\"data\":{\"full_audio\":\"\",\"x\":\"yz\"}}";
  size_t env_len = strlen(ENV);
  /* The audio does not count: exactly the envelope's size is enough. */
  struct result r = split_at(BODY, strlen(BODY), NULL, 0, env_len);
  assert_int_equal(r.status, EL_SPLIT_OK);
  assert_string_equal(r.env, ENV);
  result_free(&r);
  for (size_t max = 0; max < env_len; max++) {
    for (size_t cut = 0; cut <= strlen(BODY); cut += 5) {
      size_t cuts[1] = {cut};
      r = split_at(BODY, strlen(BODY), cuts, 1, max);
      assert_int_equal(r.status, EL_SPLIT_TOO_LARGE);
      assert_true(r.env_len <= max);
      result_free(&r);
    }
  }
  /* A big body without audio grows the envelope up to the limit, no further. */
  size_t n = 100000;
  char *big = malloc(n + 1);
  assert_non_null(big);
  memset(big, ' ', n);
  big[0] = '{';
  big[n - 1] = '}';
  big[n] = '\0';
  r = split_at(big, n, NULL, 0, n);
  assert_int_equal(r.status, EL_SPLIT_OK);
  assert_int_equal(r.env_len, n);
  result_free(&r);
  r = split_at(big, n, NULL, 0, n - 1);
  assert_int_equal(r.status, EL_SPLIT_TOO_LARGE);
  result_free(&r);
  free(big);
}

/* Megabytes of audio reach the sink in bounded batches and decode exactly. */
static void large_audio_in_batches(void **state) {
  (void)state;
  size_t n = 3 * 1000 * 1000 + 1; /* not a multiple of 3: padded */
  unsigned char *audio = malloc(n);
  assert_non_null(audio);
  uint32_t x = 12345;
  for (size_t i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    audio[i] = (unsigned char)(x >> 16);
  }
  static const char HEAD[] = "{\"type\":\"post_call_audio\",\"data\":{\"full_audio\":\"";
  static const char TAIL[] = "\",\"conversation_id\":\"c\"}}";
  size_t b64 = el_base64_len(n);
  size_t len = strlen(HEAD) + b64 + strlen(TAIL);
  char *body = malloc(len);
  assert_non_null(body);
  memcpy(body, HEAD, strlen(HEAD));
  el_base64_encode(audio, n, body + strlen(HEAD));
  memcpy(body + strlen(HEAD) + b64, TAIL, strlen(TAIL));
  size_t cuts[] = {1, 100, 65537, 1000003, 2000000, 4000001};
  struct result r = split_at(body, len, cuts, sizeof cuts / sizeof cuts[0], 4096);
  assert_int_equal(r.status, EL_SPLIT_OK);
  assert_true(r.canonical);
  assert_int_equal(r.audio.len, n);
  assert_memory_equal(r.audio.bytes, audio, n);
  assert_true(r.audio.max_call <= 64 * 1024);
  assert_true(r.audio.calls >= n / (64 * 1024));
  assert_int_equal(r.env_len, strlen(HEAD) + strlen(TAIL));
  result_free(&r);
  free(body);
  free(audio);
}

static void sink_failure_stops(void **state) {
  (void)state;
  size_t n = 300000;
  char *body = malloc(n + 64);
  assert_non_null(body);
  size_t pos = (size_t)snprintf(body, 64, "{\"data\":{\"full_audio\":\"");
  memset(body + pos, 'A', n);
  pos += n;
  memcpy(body + pos, "\"}}", 3);
  pos += 3;
  struct result r;
  memset(&r, 0, sizeof r);
  r.audio.fail_after = 2;
  struct el_split *sp = el_split_new(1024, collect, &r.audio);
  assert_non_null(sp);
  assert_int_equal(el_split_feed(sp, body, pos), EL_SPLIT_SINK_FAILED);
  assert_int_equal(el_split_feed(sp, "}", 1), EL_SPLIT_SINK_FAILED);
  assert_int_equal(el_split_finish(sp), EL_SPLIT_SINK_FAILED);
  assert_int_equal(r.audio.calls, 2);
  el_split_free(sp);
  /* A sink that fails on the last, short batch is seen too. */
  free(r.audio.bytes);
  memset(&r.audio, 0, sizeof r.audio);
  r.audio.fail_after = 1;
  sp = el_split_new(1024, collect, &r.audio);
  assert_non_null(sp);
  static const char SMALL[] = "{\"data\":{\"full_audio\":\"Zm9v\"}}";
  assert_int_equal(el_split_feed(sp, SMALL, strlen(SMALL)), EL_SPLIT_SINK_FAILED);
  el_split_free(sp);
  free(body);
  free(r.audio.bytes);
}

/* The audio batch is allocated when the audio starts; when that fails the split stops with
 * EL_SPLIT_NO_MEMORY (the webhook answers 503, Retry-After: 1), stays stopped, hands the sink
 * nothing, reports no audio, and is freed cleanly (ASan: no leak, no bad free). Whatever the
 * chunks, including the key arriving across a boundary (the state machine then runs over the
 * body so far first). */
static void audio_batch_allocation_failure(void **state) {
  (void)state;
  static const char BODY[] =
      "{\"type\":\"post_call_audio\",\"data\":{\"full_audio\":\"Zm9vYmFy\","
      "\"conversation_id\":\"c\"}}";
  static const char HEAD[] = "{\"type\":\"post_call_audio\",\"data\":{\"full_audio\":\"";
  size_t len = strlen(BODY);
  size_t cuts[sizeof BODY];
  for (size_t c = 1; c < len; c++) cuts[c - 1] = c;
  /* Whole, one byte at a time, then one cut at every offset. */
  for (size_t run = 0; run < len + 3; run++) {
    size_t ncuts = run == 0 ? 0 : run == 1 ? len - 1 : 1;
    size_t one[1] = {run >= 2 ? run - 2 : 0};
    const size_t *at = run < 2 ? cuts : one;
    fail_batch_armed = true;
    fail_batch_failed = 0;
    struct result r = split_at(BODY, len, at, ncuts, 1024); /* feeds and finishes again */
    fail_batch_armed = false;
    assert_int_equal(fail_batch_failed, 1);
    assert_int_equal(r.status, EL_SPLIT_NO_MEMORY);
    assert_false(r.has_audio);
    assert_false(r.canonical);
    assert_int_equal(r.at, -1);
    assert_int_equal(r.audio_len, 0);
    assert_int_equal(r.audio.calls, 0);
    /* The envelope stops at the audio's opening quote. */
    assert_string_equal(r.env, HEAD);
    result_free(&r);
  }
  /* Nothing is left behind: the next splitter gets its batch and splits the same body. */
  struct result r = split_str(BODY);
  assert_int_equal(r.status, EL_SPLIT_OK);
  assert_true(r.has_audio);
  assert_int_equal(r.audio.len, 6);
  assert_memory_equal(r.audio.bytes, "foobar", 6);
  result_free(&r);
  /* Without audio no batch is allocated at all (before 4b7863c every splitter held one). */
  big_mallocs = 0;
  r = split_str("{\"type\":\"post_call_transcription\",\"data\":{\"conversation_id\":\"c\"}}");
  assert_int_equal(r.status, EL_SPLIT_OK);
  assert_int_equal(big_mallocs, 0);
  result_free(&r);
}

static void base64_encode_vectors(void **state) {
  (void)state;
  static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  static const char *const enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (size_t i = 0; i < 7; i++) {
    char out[16] = {0};
    size_t n = strlen(plain[i]);
    assert_int_equal(el_base64_len(n), strlen(enc[i]));
    el_base64_encode((const unsigned char *)plain[i], n, out);
    assert_string_equal(out, enc[i]);
  }
  /* Every byte value round-trips through the splitter. */
  unsigned char all[256];
  for (int i = 0; i < 256; i++) all[i] = (unsigned char)i;
  char body[512];
  int head = snprintf(body, sizeof body, "{\"data\":{\"full_audio\":\"");
  el_base64_encode(all, 256, body + head);
  memcpy(body + head + el_base64_len(256), "\"}}", 4);
  struct result r = split_str(body);
  assert_int_equal(r.status, EL_SPLIT_OK);
  assert_true(r.canonical);
  assert_int_equal(r.audio.len, 256);
  assert_memory_equal(r.audio.bytes, all, 256);
  result_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fixture_one_shot),
      cmocka_unit_test(fixture_every_boundary),
      cmocka_unit_test(fixture_small_chunks),
      cmocka_unit_test(no_audio_envelope_is_body),
      cmocka_unit_test(empty_chunks_change_nothing),
      cmocka_unit_test(audio_among_other_members),
      cmocka_unit_test(base64_rules),
      cmocka_unit_test(second_audio_is_refused),
      cmocka_unit_test(unterminated_audio),
      cmocka_unit_test(envelope_limit),
      cmocka_unit_test(large_audio_in_batches),
      cmocka_unit_test(sink_failure_stops),
      cmocka_unit_test(audio_batch_allocation_failure),
      cmocka_unit_test(base64_encode_vectors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
