/* The streaming split of an ElevenLabs event (see el_split.h). A byte-at-a-time state machine,
 * so a chunk may end anywhere: inside an escape, a key, or a base64 quad. It follows just
 * enough JSON to know, at every byte, the nesting depth, whether a string is a key or a value,
 * and the key of the current member of the top-level object (depth 1) and of the "data" object
 * (depth 2). Keys are compared by their literal bytes: an escaped spelling such as
 * "full\u005faudio" is not the audio key (ElevenLabs never escapes ASCII), so its value stays
 * in the envelope, where the envelope limit bounds it. */
#include "model/el_split.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/bytescan.h"

#define AUDIO_BATCH (64 * 1024)
#define KEY_CAP 16 /* longer than any key we look for */
#define AUDIO_KEY "full_audio"
#define AUDIO_KEY_LEN (sizeof AUDIO_KEY - 1)

enum key_match { KEY_OTHER, KEY_DATA, KEY_FULL_AUDIO };

struct el_split {
  el_split_sink sink;
  void *cls;
  enum el_split_status status;

  /* The envelope, NUL-terminated, at most envelope_max bytes before the NUL. */
  char *env;
  size_t env_len, env_cap, env_max;

  /* JSON structure. */
  size_t depth;
  bool obj1;         /* the depth-1 container is an object */
  bool in_data;      /* the depth-2 container is the object value of the top-level "data" */
  bool expect_key;   /* at depth 1 or 2 in an object: the next string is a key */
  bool in_string;    /* inside a string that is not the audio */
  bool escape;       /* after a backslash inside that string */
  bool capturing;    /* that string is a key at depth 1 or 2 */
  bool key_escaped;  /* the key being captured holds an escape */
  enum key_match k1; /* the current member's key at depth 1 */
  enum key_match k2; /* ... and at depth 2 in data */
  char key[KEY_CAP];
  size_t key_len;

  /* Until the bytes "full_audio" appear (ElevenLabs never escapes ASCII, and an escaped key is
   * not the audio key), the envelope is the body so far and nothing else is tracked: the
   * state machine runs over it only once they do. tail: the body's last bytes, to find them
   * across a chunk boundary. */
  bool tracking;
  char tail[AUDIO_KEY_LEN - 1];
  size_t tail_len;

  /* The audio. */
  bool in_audio, audio_escape, has_audio, canonical;
  int64_t audio_at, audio_len;
  uint32_t quad; /* 6-bit groups of the current quad */
  int q;         /* characters in the current quad (0..3) */
  int pad;       /* '=' seen in the current quad */
  bool done;     /* a padded quad ended the base64: only the closing quote may follow */
  /* AUDIO_BATCH bytes, allocated when the audio starts: most events carry none, and 64 KiB
   * per request in flight was a quarter of the process's memory at 256 connections */
  unsigned char *batch;
  size_t batch_len;
};

/* Base64 values of each byte: 0..63, 64 for '=', 255 for anything else. */
static const unsigned char B64[256] = {
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 62,  255, 255, 255, 63,  52,  53,  54,  55,  56,  57,  58,  59,  60,
    61,  255, 255, 255, 64,  255, 255, 255, 0,   1,   2,   3,   4,   5,   6,   7,   8,   9,   10,
    11,  12,  13,  14,  15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25,  255, 255, 255, 255,
    255, 255, 26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,  39,  40,  41,  42,
    43,  44,  45,  46,  47,  48,  49,  50,  51,  255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255,
};

static unsigned char b64_value(unsigned char c) { return B64[c]; }

/* The bytes structure() acts on outside strings. */
static const bool STRUCT_STOP[256] = {
    ['"'] = true, [','] = true, ['{'] = true, ['['] = true, ['}'] = true, [']'] = true};

struct el_split *el_split_new(size_t envelope_max, el_split_sink sink, void *cls) {
  struct el_split *sp = calloc(1, sizeof *sp);
  if (!sp) return NULL;
  if (envelope_max > SIZE_MAX / 4) envelope_max = SIZE_MAX / 4; /* so sizes never wrap */
  sp->env_cap = envelope_max < 1024 ? envelope_max + 1 : 1024;
  sp->env = malloc(sp->env_cap);
  if (!sp->env) {
    free(sp);
    return NULL;
  }
  sp->env[0] = '\0';
  sp->env_max = envelope_max;
  sp->sink = sink;
  sp->cls = cls;
  sp->status = EL_SPLIT_OK;
  sp->audio_at = -1;
  sp->canonical = true;
  return sp;
}

static enum el_split_status env_put(struct el_split *sp, const char *bytes, size_t n) {
  if (n > sp->env_max - sp->env_len) return EL_SPLIT_TOO_LARGE;
  if (sp->env_len + n + 1 > sp->env_cap) {
    size_t cap = sp->env_cap;
    while (cap < sp->env_len + n + 1) cap = cap > (sp->env_max + 1) / 2 ? sp->env_max + 1 : cap * 2;
    char *p = realloc(sp->env, cap);
    if (!p) return EL_SPLIT_NO_MEMORY;
    sp->env = p;
    sp->env_cap = cap;
  }
  memcpy(sp->env + sp->env_len, bytes, n);
  sp->env_len += n;
  sp->env[sp->env_len] = '\0';
  return EL_SPLIT_OK;
}

static enum el_split_status flush_audio(struct el_split *sp) {
  if (sp->batch_len == 0) return EL_SPLIT_OK;
  size_t n = sp->batch_len;
  sp->batch_len = 0;
  return sp->sink(sp->cls, sp->batch, n) ? EL_SPLIT_OK : EL_SPLIT_SINK_FAILED;
}

static enum el_split_status audio_byte(struct el_split *sp, unsigned char b) {
  sp->audio_len++;
  sp->batch[sp->batch_len++] = b;
  return sp->batch_len == AUDIO_BATCH ? flush_audio(sp) : EL_SPLIT_OK;
}

/* One base64 character (after unescaping) of the audio. */
static enum el_split_status audio_char(struct el_split *sp, unsigned char c) {
  unsigned char v = b64_value(c);
  if (v == 0xff || sp->done) return EL_SPLIT_BAD_AUDIO;
  if (v == 64) {
    /* '=' pads the third and fourth place of the last quad only. */
    if (sp->q + sp->pad < 2) return EL_SPLIT_BAD_AUDIO;
    sp->pad++;
    if (sp->q + sp->pad < 4) return EL_SPLIT_OK;
  } else {
    if (sp->pad) return EL_SPLIT_BAD_AUDIO;
    sp->quad = sp->quad << 6 | v;
    if (++sp->q < 4) return EL_SPLIT_OK;
  }
  enum el_split_status st = EL_SPLIT_OK;
  uint32_t x = sp->quad;
  if (sp->pad == 0) {
    if ((st = audio_byte(sp, (unsigned char)(x >> 16))) != EL_SPLIT_OK) return st;
    if ((st = audio_byte(sp, (unsigned char)(x >> 8))) != EL_SPLIT_OK) return st;
    st = audio_byte(sp, (unsigned char)x);
  } else {
    /* 2 characters (12 bits) make 1 byte, 3 (18 bits) make 2; the rest must be zero bits. */
    if (sp->q == 2) {
      if (x & 0xf) sp->canonical = false;
      st = audio_byte(sp, (unsigned char)(x >> 4));
    } else {
      if (x & 0x3) sp->canonical = false;
      if ((st = audio_byte(sp, (unsigned char)(x >> 10))) != EL_SPLIT_OK) return st;
      st = audio_byte(sp, (unsigned char)(x >> 2));
    }
    sp->done = true;
  }
  sp->quad = 0;
  sp->q = 0;
  sp->pad = 0;
  return st;
}

/* The closing quote: an unpadded tail is decoded (not canonical), a lone character is not
 * base64 at all. */
static enum el_split_status audio_end(struct el_split *sp) {
  enum el_split_status st = EL_SPLIT_OK;
  if (sp->pad) return EL_SPLIT_BAD_AUDIO; /* "xy=" */
  if (sp->q == 1) return EL_SPLIT_BAD_AUDIO;
  if (sp->q == 2 || sp->q == 3) {
    sp->canonical = false;
    int q = sp->q;
    for (int i = q; i < 4; i++)
      if ((st = audio_char(sp, '=')) != EL_SPLIT_OK) return st;
  }
  sp->in_audio = false;
  return flush_audio(sp);
}

static enum el_split_status audio_input(struct el_split *sp, unsigned char c) {
  if (sp->audio_escape) {
    sp->audio_escape = false;
    if (c != '/') return EL_SPLIT_BAD_AUDIO;
    sp->canonical = false;
    return audio_char(sp, '/');
  }
  if (c == '\\') {
    sp->audio_escape = true;
    return EL_SPLIT_OK;
  }
  if (c == '"') {
    enum el_split_status st = audio_end(sp);
    return st == EL_SPLIT_OK ? env_put(sp, "\"", 1) : st;
  }
  return audio_char(sp, c);
}

/* Does the container at this depth track its keys? */
static bool keyed(const struct el_split *sp) {
  return (sp->depth == 1 && sp->obj1) || (sp->depth == 2 && sp->in_data);
}

static void key_end(struct el_split *sp) {
  enum key_match m = KEY_OTHER;
  if (!sp->key_escaped) {
    if (sp->depth == 1 && sp->key_len == 4 && memcmp(sp->key, "data", 4) == 0) m = KEY_DATA;
    if (sp->depth == 2 && sp->key_len == 10 && memcmp(sp->key, "full_audio", 10) == 0)
      m = KEY_FULL_AUDIO;
  }
  if (sp->depth == 1)
    sp->k1 = m;
  else
    sp->k2 = m;
  sp->capturing = false;
  sp->expect_key = false;
}

/* Structure outside strings; returns false when c starts the audio. */
static bool structure(struct el_split *sp, unsigned char c) {
  switch (c) {
    case '"':
      if (keyed(sp) && sp->expect_key) {
        sp->capturing = true;
        sp->key_escaped = false;
        sp->key_len = 0;
      } else if (sp->depth == 2 && sp->in_data && sp->k2 == KEY_FULL_AUDIO) {
        return false;
      }
      sp->in_string = true;
      break;
    case ',':
      if (sp->depth == 1) sp->k1 = KEY_OTHER;
      if (sp->depth == 2) sp->k2 = KEY_OTHER;
      sp->expect_key = true;
      break;
    case '{':
    case '[':
      sp->depth++;
      if (sp->depth == 1) sp->obj1 = c == '{';
      if (sp->depth == 2) {
        sp->in_data = c == '{' && sp->obj1 && sp->k1 == KEY_DATA;
        sp->k2 = KEY_OTHER;
      }
      sp->expect_key = true;
      break;
    case '}':
    case ']':
      if (sp->depth > 0) sp->depth--;
      if (sp->depth < 2) sp->in_data = false;
      sp->expect_key = false;
      break;
    default:
      break;
  }
  return true;
}

static enum el_split_status feed_byte(struct el_split *sp, unsigned char c) {
  if (sp->in_audio) return audio_input(sp, c);
  if (sp->in_string) {
    if (sp->escape) {
      sp->escape = false;
    } else if (c == '\\') {
      sp->escape = true;
      sp->key_escaped = true;
    } else if (c == '"') {
      sp->in_string = false;
      if (sp->capturing) key_end(sp);
    } else if (sp->capturing) {
      if (sp->key_len < KEY_CAP)
        sp->key[sp->key_len++] = (char)c;
      else
        sp->key_escaped = true; /* too long to be a key we look for */
    }
    return EL_SPLIT_OK;
  }
  if (!structure(sp, c)) {
    if (sp->has_audio) return EL_SPLIT_BAD_AUDIO; /* a second data.full_audio */
    enum el_split_status st = env_put(sp, "\"", 1);
    if (st != EL_SPLIT_OK) return st;
    /* not zeroed: written before it is read */
    if (!(sp->batch = malloc(AUDIO_BATCH))) return EL_SPLIT_NO_MEMORY;
    sp->has_audio = true;
    sp->in_audio = true;
    sp->audio_at = (int64_t)sp->env_len;
    return EL_SPLIT_OK;
  }
  return EL_SPLIT_OK;
}

/* True when AUDIO_KEY's bytes are in the body's tail followed by data[0..len). */
static bool audio_key_in(const struct el_split *sp, const char *data, size_t len) {
  char joint[2 * (AUDIO_KEY_LEN - 1)];
  size_t head = len < AUDIO_KEY_LEN - 1 ? len : AUDIO_KEY_LEN - 1;
  memcpy(joint, sp->tail, sp->tail_len);
  memcpy(joint + sp->tail_len, data, head);
  return memmem(joint, sp->tail_len + head, AUDIO_KEY, AUDIO_KEY_LEN) ||
         memmem(data, len, AUDIO_KEY, AUDIO_KEY_LEN);
}

/* Keeps the body's last AUDIO_KEY_LEN - 1 bytes, data[0..len) being the newest. */
static void keep_tail(struct el_split *sp, const char *data, size_t len) {
  const size_t cap = sizeof sp->tail;
  if (len >= cap) {
    memcpy(sp->tail, data + len - cap, cap);
    sp->tail_len = cap;
    return;
  }
  size_t keep = sp->tail_len + len > cap ? cap - len : sp->tail_len;
  memmove(sp->tail, sp->tail + sp->tail_len - keep, keep);
  memcpy(sp->tail + keep, data, len);
  sp->tail_len = keep + len;
}

enum el_split_status el_split_feed(struct el_split *sp, const char *data, size_t len) {
  if (sp->status != EL_SPLIT_OK) return sp->status;
  /* Nothing to do; data may be NULL, which memcpy and memmem must never be given. */
  if (len == 0) return EL_SPLIT_OK;
  if (!sp->tracking) {
    if (!audio_key_in(sp, data, len)) {
      keep_tail(sp, data, len);
      return sp->status = env_put(sp, data, len);
    }
    /* The structure of what came before (never the audio: its key was not in it). */
    sp->tracking = true;
    for (size_t k = 0; k < sp->env_len; k++) (void)feed_byte(sp, (unsigned char)sp->env[k]);
  }
  const unsigned char *u = (const unsigned char *)data;
  size_t i = 0;
  while (i < len) {
    enum el_split_status st;
    if (!sp->in_audio) {
      /* Envelope bytes go out in runs: everything up to the byte that starts the audio. */
      size_t start = i;
      while (i < len && !sp->in_audio) {
        if (sp->in_string && !sp->escape && !sp->capturing) {
          /* Inside a string that is neither a key we track nor the audio: only a quote or a
           * backslash changes anything, so the bytes up to one go out as they are. */
          i = (size_t)(bytescan_quote(u + i, u + len) - u);
          if (i == len) break;
        } else if (!sp->in_string) {
          /* Outside strings only quotes, commas and brackets change anything (whitespace,
           * colons, numbers and literals do not). */
          while (i < len && !STRUCT_STOP[u[i]]) i++;
          if (i == len) break;
        }
        bool audio_starts = !sp->in_string && u[i] == '"' && sp->depth == 2 && sp->in_data &&
                            sp->k2 == KEY_FULL_AUDIO && !sp->expect_key;
        if (audio_starts) break;
        st = feed_byte(sp, u[i]);
        if (st != EL_SPLIT_OK) return sp->status = st;
        i++;
      }
      if ((st = env_put(sp, data + start, i - start)) != EL_SPLIT_OK) return sp->status = st;
      if (i < len && !sp->in_audio) {
        /* The opening quote of the audio. */
        if ((st = feed_byte(sp, u[i])) != EL_SPLIT_OK) return sp->status = st;
        i++;
      }
      continue;
    }
    /* Audio: a tight loop over plain base64 quads, the state machine for the rest. */
    while (i < len && sp->in_audio) {
      if (sp->q == 0 && !sp->audio_escape && !sp->done && len - i >= 4 &&
          sp->batch_len + 3 <= AUDIO_BATCH) {
        unsigned char a = b64_value(u[i]), b = b64_value(u[i + 1]), c = b64_value(u[i + 2]),
                      d = b64_value(u[i + 3]);
        if ((a | b | c | d) < 64) {
          uint32_t x = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | d;
          sp->batch[sp->batch_len++] = (unsigned char)(x >> 16);
          sp->batch[sp->batch_len++] = (unsigned char)(x >> 8);
          sp->batch[sp->batch_len++] = (unsigned char)x;
          sp->audio_len += 3;
          i += 4;
          if (sp->batch_len == AUDIO_BATCH && (st = flush_audio(sp)) != EL_SPLIT_OK)
            return sp->status = st;
          continue;
        }
      }
      if ((st = feed_byte(sp, u[i])) != EL_SPLIT_OK) return sp->status = st;
      i++;
    }
  }
  return EL_SPLIT_OK;
}

enum el_split_status el_split_finish(struct el_split *sp) {
  if (sp->status != EL_SPLIT_OK) return sp->status;
  /* A body that ends inside the audio string is cut short: its audio is not the call's. */
  if (sp->in_audio) return sp->status = EL_SPLIT_BAD_AUDIO;
  enum el_split_status st = flush_audio(sp);
  return sp->status = st;
}

const char *el_split_envelope(const struct el_split *sp, size_t *len) {
  *len = sp->env_len;
  return sp->env;
}

bool el_split_has_audio(const struct el_split *sp) { return sp->has_audio; }

int64_t el_split_audio_len(const struct el_split *sp) { return sp->audio_len; }

int64_t el_split_audio_at(const struct el_split *sp) { return sp->audio_at; }

bool el_split_canonical(const struct el_split *sp) { return sp->has_audio && sp->canonical; }

void el_split_free(struct el_split *sp) {
  if (!sp) return;
  free(sp->batch);
  free(sp->env);
  free(sp);
}

size_t el_base64_len(size_t len) { return (len / 3 + (len % 3 != 0)) * 4; }

void el_base64_encode(const unsigned char *in, size_t len, char *out) {
  static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i = 0, o = 0;
  for (; i + 3 <= len; i += 3) {
    uint32_t x = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = abc[x >> 18];
    out[o++] = abc[(x >> 12) & 63];
    out[o++] = abc[(x >> 6) & 63];
    out[o++] = abc[x & 63];
  }
  if (len - i == 1) {
    uint32_t x = (uint32_t)in[i] << 16;
    out[o++] = abc[x >> 18];
    out[o++] = abc[(x >> 12) & 63];
    out[o++] = '=';
    out[o++] = '=';
  } else if (len - i == 2) {
    uint32_t x = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = abc[x >> 18];
    out[o++] = abc[(x >> 12) & 63];
    out[o++] = abc[(x >> 6) & 63];
    out[o++] = '=';
  }
}
