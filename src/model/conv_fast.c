/* The fast path for seed webhooks: a recursive-descent scanner that checks the body is JSON as
 * jansson reads it with JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL (and
 * model_body_load's raw-NUL rule), and checks validate()'s rules (model/conversation.c), in one
 * pass, without a DOM. It declines whatever it is not certain of, so that the jansson path
 * answers, with its own errors, every body the scanner does not accept:
 *  - any JSON error, any failed rule (it never builds an error itself);
 *  - a backslash in a key, or in a value it returns or compares (identifiers, timestamp,
 *    speaker, agentId, platform); a \u escape of a surrogate half that is not a well-formed
 *    high+low pair;
 *  - a number jansson might read otherwise: integers of more than 18 digits (the jansson path
 *    then decodes every integer as a double), reals whose size it cannot bound below
 *    DBL_MAX (more than 200 integer digits, or an exponent of more than two digits); an
 *    integer field written as anything but plain digits;
 *  - nesting deeper than CONV_FAST_DEPTH_MAX, an object with more than CONV_FAST_KEYS_MAX
 *    members (duplicates are found by comparing keys pairwise). */
#include "model/conv_fast.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"
#include "core/utf8.h"
#include "model/stored.h"

struct scan {
  const char *p;   /* next byte */
  const char *end; /* one past the last byte */
};

enum kind { K_STRING, K_INT, K_REAL, K_TRUE, K_FALSE, K_NULL, K_OBJECT, K_ARRAY };

/* A scanned value: for a string, its raw bytes between the quotes; for a number, its text. */
struct val {
  bool seen;
  enum kind kind;
  const char *s;
  size_t n;
  bool escaped; /* a string holding a backslash: its raw bytes are not its value */
};

static bool value(struct scan *sc, int depth, struct val *v);

static void skip_ws(struct scan *sc) {
  while (sc->p < sc->end && (*sc->p == ' ' || *sc->p == '\t' || *sc->p == '\n' || *sc->p == '\r'))
    sc->p++;
}

static int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* A string starting at the opening quote. Raw control bytes (NUL included) and invalid UTF-8
 * are JSON errors; escapes are checked as jansson reads them (a surrogate half only in a
 * well-formed pair). */
static bool string(struct scan *sc, struct val *v) {
  sc->p++; /* the quote */
  v->kind = K_STRING;
  v->s = sc->p;
  v->escaped = false;
  while (sc->p < sc->end) {
    unsigned char c = (unsigned char)*sc->p;
    if (c == '"') {
      v->n = (size_t)(sc->p - v->s);
      sc->p++;
      return true;
    }
    if (c < 0x20) return false;
    if (c < 0x80 && c != '\\') {
      sc->p++;
      continue;
    }
    if (c >= 0x80) {
      size_t n = utf8_sequence_length(sc->p, (size_t)(sc->end - sc->p));
      if (n == 0) return false;
      sc->p += n;
      continue;
    }
    v->escaped = true;
    if (sc->end - sc->p < 2) return false;
    char e = sc->p[1];
    if (e == 'u') {
      if (sc->end - sc->p < 6) return false;
      int cp = 0;
      for (int i = 2; i < 6; i++) {
        int h = hex(sc->p[i]);
        if (h < 0) return false;
        cp = cp * 16 + h;
      }
      if (cp >= 0xdc00 && cp <= 0xdfff) return false; /* a low half alone: jansson refuses it */
      if (cp >= 0xd800 && cp <= 0xdbff) {
        /* a high half only with its low half right after (what JSON encoders write for an emoji,
         * e.g. Python's json.dumps): jansson decodes the pair, and refuses anything else */
        if (sc->end - sc->p < 12 || sc->p[6] != '\\' || sc->p[7] != 'u') return false;
        int lo = 0;
        for (int i = 8; i < 12; i++) {
          int h = hex(sc->p[i]);
          if (h < 0) return false;
          lo = lo * 16 + h;
        }
        if (lo < 0xdc00 || lo > 0xdfff) return false;
        sc->p += 12;
      } else {
        sc->p += 6;
      }
    } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
               e == 't') {
      sc->p += 2;
    } else {
      return false;
    }
  }
  return false;
}

static size_t digits(struct scan *sc) {
  const char *start = sc->p;
  while (sc->p < sc->end && *sc->p >= '0' && *sc->p <= '9') sc->p++;
  return (size_t)(sc->p - start);
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, within the bounds said above. */
static bool number(struct scan *sc, struct val *v) {
  v->s = sc->p;
  if (*sc->p == '-') sc->p++;
  if (sc->p >= sc->end || *sc->p < '0' || *sc->p > '9') return false;
  size_t int_digits = digits(sc);
  if (int_digits > 1 && v->s[*v->s == '-' ? 1 : 0] == '0') return false;
  bool real = false;
  if (sc->p < sc->end && *sc->p == '.') {
    sc->p++;
    if (digits(sc) == 0) return false;
    real = true;
  }
  if (sc->p < sc->end && (*sc->p == 'e' || *sc->p == 'E')) {
    sc->p++;
    if (sc->p < sc->end && (*sc->p == '+' || *sc->p == '-')) sc->p++;
    size_t exp_digits = digits(sc);
    if (exp_digits == 0 || exp_digits > 2) return false;
    real = true;
  }
  if (real ? int_digits > 200 : int_digits > 18) return false;
  v->kind = real ? K_REAL : K_INT;
  v->n = (size_t)(sc->p - v->s);
  return true;
}

static bool literal(struct scan *sc, const char *word, enum kind kind, struct val *v) {
  size_t n = strlen(word);
  if ((size_t)(sc->end - sc->p) < n || memcmp(sc->p, word, n) != 0) return false;
  v->kind = kind;
  v->s = sc->p;
  v->n = n;
  sc->p += n;
  return true;
}

/* An object's member that the caller wants: its value either scanned into *slot, or parsed
 * by fn (which starts at the value and must consume it). */
struct member {
  const char *name;
  struct val *slot;
  bool (*fn)(struct scan *sc, int depth, void *ctx);
  void *ctx;
};

/* An object starting at '{'. Members named in want[] are captured; every key is compared with
 * the ones before it (JSON_REJECT_DUPLICATES). */
static bool object(struct scan *sc, int depth, const struct member *want, size_t nwant) {
  if (depth > CONV_FAST_DEPTH_MAX) return false;
  struct {
    const char *s;
    size_t n;
  } keys[CONV_FAST_KEYS_MAX];
  size_t nkeys = 0;
  sc->p++; /* '{' */
  skip_ws(sc);
  if (sc->p < sc->end && *sc->p == '}') {
    sc->p++;
    return true;
  }
  for (;;) {
    skip_ws(sc);
    if (sc->p >= sc->end || *sc->p != '"') return false;
    struct val k;
    if (!string(sc, &k) || k.escaped || nkeys == CONV_FAST_KEYS_MAX) return false;
    for (size_t i = 0; i < nkeys; i++)
      if (keys[i].n == k.n && memcmp(keys[i].s, k.s, k.n) == 0) return false;
    keys[nkeys].s = k.s;
    keys[nkeys].n = k.n;
    nkeys++;
    skip_ws(sc);
    if (sc->p >= sc->end || *sc->p != ':') return false;
    sc->p++;
    skip_ws(sc);
    if (sc->p >= sc->end) return false;
    const struct member *m = NULL;
    for (size_t i = 0; i < nwant && !m; i++)
      if (strlen(want[i].name) == k.n && memcmp(want[i].name, k.s, k.n) == 0) m = &want[i];
    if (m && m->fn) {
      if (!m->fn(sc, depth + 1, m->ctx)) return false;
    } else {
      struct val tmp;
      struct val *v = m ? m->slot : &tmp;
      if (!value(sc, depth + 1, v)) return false;
      v->seen = true;
    }
    skip_ws(sc);
    if (sc->p >= sc->end) return false;
    if (*sc->p == '}') {
      sc->p++;
      return true;
    }
    if (*sc->p != ',') return false;
    sc->p++;
  }
}

/* An array starting at '['; each element goes to fn when given, else is scanned. *count: the
 * number of elements. */
static bool array(struct scan *sc, int depth, bool (*fn)(struct scan *, int, void *), void *ctx,
                  size_t *count) {
  if (depth > CONV_FAST_DEPTH_MAX) return false;
  *count = 0;
  sc->p++; /* '[' */
  skip_ws(sc);
  if (sc->p < sc->end && *sc->p == ']') {
    sc->p++;
    return true;
  }
  for (;;) {
    skip_ws(sc);
    if (sc->p >= sc->end) return false;
    (*count)++;
    if (fn) {
      if (!fn(sc, depth + 1, ctx)) return false;
    } else {
      struct val tmp;
      if (!value(sc, depth + 1, &tmp)) return false;
    }
    skip_ws(sc);
    if (sc->p >= sc->end) return false;
    if (*sc->p == ']') {
      sc->p++;
      return true;
    }
    if (*sc->p != ',') return false;
    sc->p++;
  }
}

/* Any JSON value (whitespace before it already skipped). */
static bool value(struct scan *sc, int depth, struct val *v) {
  if (sc->p >= sc->end) return false;
  size_t count;
  v->escaped = false;
  switch (*sc->p) {
    case '{':
      v->kind = K_OBJECT;
      return object(sc, depth, NULL, 0);
    case '[':
      v->kind = K_ARRAY;
      return array(sc, depth, NULL, NULL, &count);
    case '"':
      return string(sc, v);
    case 't':
      return literal(sc, "true", K_TRUE, v);
    case 'f':
      return literal(sc, "false", K_FALSE, v);
    case 'n':
      return literal(sc, "null", K_NULL, v);
    default:
      return number(sc, v);
  }
}

/* ---- the seed webhook's rules (validate() in model/conversation.c) ---- */

static bool is_text(const struct val *v) { return v->seen && v->kind == K_STRING; }

/* A string value whose raw bytes are its value (no escape). */
static bool is_plain_text(const struct val *v) { return is_text(v) && !v->escaped; }

static bool is_object_or_absent(const struct val *v) {
  return !v->seen || v->kind == K_NULL || v->kind == K_OBJECT;
}

static bool equals(const struct val *v, const char *s) {
  return v->n == strlen(s) && memcmp(v->s, s, v->n) == 0;
}

/* check_identifier's rules, on a value without escapes. */
static bool identifier(const struct val *v, size_t max) {
  return is_plain_text(v) && v->n >= 1 && v->n <= max && model_is_printable(v->s, v->n);
}

/* check_count's rules: plain digits, 0..MODEL_COUNT_MAX. */
static bool count(const struct val *v, int64_t *out) {
  if (!v->seen || v->kind != K_INT || v->s[0] == '-') return false;
  int64_t x = 0;
  for (size_t i = 0; i < v->n; i++) x = x * 10 + (v->s[i] - '0'); /* at most 18 digits */
  if (x > MODEL_COUNT_MAX) return false;
  *out = x;
  return true;
}

struct fields {
  struct val email, account, conversation, summary, agent, platform;
  bool transcript_seen, metadata_seen;
  struct conversation_input *out;
};

static bool message(struct scan *sc, int depth, void *ctx) {
  struct conversation_input *out = ctx;
  if (*sc->p != '{') return false;
  struct val ts = {0}, speaker = {0}, content = {0}, id = {0}, md = {0};
  const struct member want[] = {{"timestamp", &ts, NULL, NULL},
                                {"speaker", &speaker, NULL, NULL},
                                {"content", &content, NULL, NULL},
                                {"messageId", &id, NULL, NULL},
                                {"metadata", &md, NULL, NULL}};
  if (!object(sc, depth, want, sizeof want / sizeof want[0])) return false;
  int64_t us;
  if (!is_plain_text(&ts) || !time_parse_rfc3339(ts.s, ts.n, &us)) return false;
  if (!out->has_start || us < out->start_us) {
    out->has_start = true;
    out->start_us = us;
  }
  return is_plain_text(&speaker) && (equals(&speaker, "user") || equals(&speaker, "agent")) &&
         is_text(&content) && is_text(&id) && is_object_or_absent(&md);
}

static bool transcript(struct scan *sc, int depth, void *ctx) {
  struct fields *f = ctx;
  size_t n;
  if (*sc->p != '[' || !array(sc, depth, message, f->out, &n)) return false;
  f->transcript_seen = true;
  return n <= MODEL_TRANSCRIPT_MAX;
}

static bool metadata(struct scan *sc, int depth, void *ctx) {
  struct fields *f = ctx;
  if (*sc->p != '{') return false;
  struct val session = {0}, duration = {0}, messages = {0}, agent_text = {0};
  const struct member want[] = {
      {"sessionId", &session, NULL, NULL},    {"agentId", &f->agent, NULL, NULL},
      {"duration", &duration, NULL, NULL},    {"messageCount", &messages, NULL, NULL},
      {"platform", &f->platform, NULL, NULL}, {"userAgent", &agent_text, NULL, NULL}};
  if (!object(sc, depth, want, sizeof want / sizeof want[0])) return false;
  f->metadata_seen = true;
  return (!session.seen || session.kind == K_NULL || session.kind == K_STRING) &&
         is_plain_text(&f->agent) && count(&duration, &f->out->duration) &&
         count(&messages, &f->out->message_count) && is_plain_text(&f->platform) &&
         is_text(&agent_text);
}

/* model_usable_id on a value without escapes: its length, or 0 when unusable. */
static size_t usable(const struct val *v, size_t max) {
  return v->n >= 1 && v->n <= max && model_is_printable(v->s, v->n) ? v->n : 0;
}

/* Copies the returned strings into one allocation the struct owns. */
static bool copy_out(struct fields *f) {
  struct conversation_input *out = f->out;
  size_t agent_n = usable(&f->agent, MODEL_AGENT_ID_MAX);
  size_t platform_n = usable(&f->platform, MODEL_AGENT_ID_MAX);
  const struct val *src[5] = {&f->conversation, &f->email, &f->account, &f->agent, &f->platform};
  size_t n[5] = {f->conversation.n, f->email.n, f->account.n, agent_n, platform_n};
  const char **dst[5] = {&out->conversation_id, &out->email_id, &out->account_id, &out->agent_id,
                         &out->platform};
  size_t total = 0;
  for (int i = 0; i < 5; i++) total += n[i] + 1;
  char *mem = malloc(total);
  if (!mem) return false;
  out->owned = mem;
  for (int i = 0; i < 5; i++) {
    if (i >= 3 && n[i] == 0) { /* agentId, platform: unusable reads as unknown */
      *dst[i] = NULL;
      continue;
    }
    memcpy(mem, src[i]->s, n[i]);
    mem[n[i]] = '\0';
    *dst[i] = mem;
    mem += n[i] + 1;
  }
  return true;
}

bool model_conv_scan(const char *body, size_t len, struct conversation_input *out) {
  memset(out, 0, sizeof *out);
  struct scan sc = {body, body + len};
  struct fields f;
  memset(&f, 0, sizeof f);
  f.out = out;
  const struct member want[] = {{"emailId", &f.email, NULL, NULL},
                                {"accountId", &f.account, NULL, NULL},
                                {"conversationId", &f.conversation, NULL, NULL},
                                {"transcript", NULL, transcript, &f},
                                {"metadata", NULL, metadata, &f},
                                {"summary", &f.summary, NULL, NULL}};
  skip_ws(&sc);
  bool ok = sc.p < sc.end && *sc.p == '{' && object(&sc, 1, want, sizeof want / sizeof want[0]);
  if (ok) {
    skip_ws(&sc);
    ok = sc.p == sc.end;
  }
  ok = ok && identifier(&f.email, MODEL_EMAIL_ID_MAX) &&
       identifier(&f.account, MODEL_ACCOUNT_ID_MAX) &&
       identifier(&f.conversation, MODEL_CONVERSATION_ID_MAX) && f.transcript_seen &&
       f.metadata_seen && is_object_or_absent(&f.summary);
  /* endTime (earliest timestamp + duration) must be renderable, as in validate(). */
  ok = ok && !(out->has_start && out->start_us > TIME_MAX_US - out->duration * 1000000);
  ok = ok && copy_out(&f);
  if (!ok) {
    free(out->owned);
    memset(out, 0, sizeof *out);
    return false;
  }
  out->status = "completed";
  return true;
}

enum model_result model_conversation_parse_fast(const char *body, size_t len,
                                                struct conversation_input *out, json_t **problems,
                                                char *message, size_t message_len) {
  if (model_conv_scan(body, len, out)) {
    *problems = NULL;
    return MODEL_OK;
  }
  return model_conversation_parse(body, len, out, problems, message, message_len);
}
