/* The ElevenLabs event's fast path (see el_fast.h). The scanner (model/json_scan.h) checks the
 * event is JSON as model_elevenlabs_parse reads it and captures the members the mapping uses;
 * the mapping then follows model/elevenlabs.c's rules (derive() and its helpers) on the
 * captured values and writes the derived body as json_dumps(JSON_COMPACT) writes the DOM
 * elevenlabs.c builds: members in the same order, strings escaped as jansson escapes them,
 * integers in decimal. Besides what json_scan.h declines, it declines, so that the jansson path
 * answers:
 *  - any event model_elevenlabs_parse refuses (it never builds an error itself);
 *  - a backslash in a value it returns or compares (type, conversation_id, agent_id, status,
 *    the email and account variables, analysis.call_successful): message, role and
 *    failure_reason are decoded and written again as jansson would write them. */
#include "model/el_fast.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"
#include "core/utf8.h"
#include "model/json_scan.h"
#include "model/stored.h"

typedef struct json_scan_val val_t;

struct turn {
  bool object;
  val_t role, message, time;
};

struct fields {
  const struct el_names *names;
  val_t type, event_ts;
  bool data_object;
  val_t conversation_id, agent_id, status, failure_reason;
  val_t start_time, call_duration; /* data.metadata's */
  val_t email, account;            /* data.conversation_initiation_client_data.dynamic_variables */
  val_t analysis;                  /* its whole text when seen */
  bool analysis_object;
  val_t call_successful;
  bool transcript_array;
  struct turn *turns;
  size_t nturns, cap;
  bool oom;
};

/* ---- scanning ---- */

/* A member whose value, when an object, has members we want; anything else is scanned. */
static bool maybe_object(struct json_scan *sc, int depth, const struct json_scan_member *want,
                         size_t nwant, bool *is_object) {
  if (*sc->p != '{') {
    val_t tmp;
    return json_scan_value(sc, depth, &tmp);
  }
  if (is_object) *is_object = true;
  return json_scan_object(sc, depth, want, nwant);
}

static bool turn(struct json_scan *sc, int depth, void *ctx) {
  struct fields *f = ctx;
  if (f->nturns == f->cap) {
    size_t cap = f->cap ? f->cap * 2 : 64;
    struct turn *t = realloc(f->turns, cap * sizeof *t);
    if (!t) {
      f->oom = true;
      return false;
    }
    f->turns = t;
    f->cap = cap;
  }
  struct turn *t = &f->turns[f->nturns++];
  memset(t, 0, sizeof *t);
  const struct json_scan_member want[] = {{"role", &t->role, NULL, NULL},
                                          {"message", &t->message, NULL, NULL},
                                          {"time_in_call_secs", &t->time, NULL, NULL}};
  return maybe_object(sc, depth, want, 3, &t->object);
}

static bool transcript(struct json_scan *sc, int depth, void *ctx) {
  struct fields *f = ctx;
  if (*sc->p != '[') {
    val_t tmp;
    return json_scan_value(sc, depth, &tmp);
  }
  size_t n;
  f->transcript_array = true;
  f->nturns = 0; /* a duplicate "transcript" is refused anyway */
  return json_scan_array(sc, depth, turn, f, &n);
}

static bool metadata(struct json_scan *sc, int depth, void *ctx) {
  struct fields *f = ctx;
  const struct json_scan_member want[] = {{"start_time_unix_secs", &f->start_time, NULL, NULL},
                                          {"call_duration_secs", &f->call_duration, NULL, NULL}};
  return maybe_object(sc, depth, want, 2, NULL);
}

static bool variables(struct json_scan *sc, int depth, void *ctx) {
  struct fields *f = ctx;
  const struct json_scan_member want[] = {{f->names->email_var, &f->email, NULL, NULL},
                                          {f->names->account_var, &f->account, NULL, NULL}};
  return maybe_object(sc, depth, want, 2, NULL);
}

static bool client_data(struct json_scan *sc, int depth, void *ctx) {
  const struct json_scan_member want[] = {{"dynamic_variables", NULL, variables, ctx}};
  return maybe_object(sc, depth, want, 1, NULL);
}

static bool analysis(struct json_scan *sc, int depth, void *ctx) {
  struct fields *f = ctx;
  const char *start = sc->p;
  const struct json_scan_member want[] = {{"call_successful", &f->call_successful, NULL, NULL}};
  if (!maybe_object(sc, depth, want, 1, &f->analysis_object)) return false;
  f->analysis.seen = true;
  f->analysis.s = start;
  f->analysis.n = (size_t)(sc->p - start);
  return true;
}

static bool data(struct json_scan *sc, int depth, void *ctx) {
  struct fields *f = ctx;
  const struct json_scan_member want[] = {
      {"conversation_id", &f->conversation_id, NULL, NULL},
      {"agent_id", &f->agent_id, NULL, NULL},
      {"status", &f->status, NULL, NULL},
      {"failure_reason", &f->failure_reason, NULL, NULL},
      {"transcript", NULL, transcript, f},
      {"metadata", NULL, metadata, f},
      {"conversation_initiation_client_data", NULL, client_data, f},
      {"analysis", NULL, analysis, f}};
  return maybe_object(sc, depth, want, sizeof want / sizeof want[0], &f->data_object);
}

/* ---- values, as elevenlabs.c reads them ---- */

static bool is_string(const val_t *v) { return v->seen && v->kind == JSON_SCAN_STRING; }

static bool equals(const val_t *v, const char *s) {
  return is_string(v) && v->n == strlen(s) && memcmp(v->s, s, v->n) == 0;
}

/* model_usable_id on a string without escapes: its length, or 0 when unusable. */
static size_t usable(const val_t *v, size_t max) {
  return is_string(v) && v->n >= 1 && v->n <= max && model_is_printable(v->s, v->n) ? v->n : 0;
}

/* An integer of at most 18 digits (the scanner declines longer ones). */
static int64_t int_value(const val_t *v) {
  int64_t x = 0;
  for (size_t i = v->s[0] == '-' ? 1 : 0; i < v->n; i++) x = x * 10 + (v->s[i] - '0');
  return v->s[0] == '-' ? -x : x;
}

/* A real as jansson reads it (strtod; the number is followed by a byte that ends it, inside the
 * body: the scanner saw the closing bracket after it). */
static double real_value(const val_t *v) { return strtod(v->s, NULL); }

/* seconds_to_us of elevenlabs.c. */
static bool seconds_to_us(const val_t *v, double limit_s, int64_t *out) {
  if (!v->seen) return false;
  if (v->kind == JSON_SCAN_INT) {
    int64_t i = int_value(v);
    if (i < -(int64_t)limit_s || i > (int64_t)limit_s) return false;
    *out = i * 1000000;
    return true;
  }
  if (v->kind == JSON_SCAN_REAL) {
    double d = real_value(v);
    if (!isfinite(d) || d < -limit_s || d > limit_s) return false;
    double us = d * 1e6;
    *out = (int64_t)(us < 0 ? us - 0.5 : us + 0.5);
    return true;
  }
  return false;
}

/* duration_secs of elevenlabs.c. */
static int64_t duration_secs(const val_t *v) {
  double d;
  if (v->seen && v->kind == JSON_SCAN_INT)
    d = (double)int_value(v);
  else if (v->seen && v->kind == JSON_SCAN_REAL)
    d = real_value(v);
  else
    return 0;
  if (!(d > 0)) return 0;
  if (d >= (double)MODEL_COUNT_MAX) return MODEL_COUNT_MAX;
  return (int64_t)d;
}

/* ---- the derived body ---- */

struct out {
  char *p;
  size_t len;
};

static void put(struct out *o, const char *s, size_t n) {
  memcpy(o->p + o->len, s, n);
  o->len += n;
}

static void puts_(struct out *o, const char *s) { put(o, s, strlen(s)); }

/* s[0..n) (valid UTF-8, NUL bytes allowed) as a JSON string, escaped as jansson's dump_string
 * escapes it without flags: '"', '\\' and controls only. At most 6n + 2 bytes. */
static void put_escaped(struct out *o, const char *s, size_t n) {
  static const char hexd[] = "0123456789ABCDEF";
  o->p[o->len++] = '"';
  size_t start = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    put(o, s + start, i - start);
    start = i + 1;
    char seq[6] = {'\\', 0, 0, 0, 0, 0};
    size_t len = 2;
    switch (c) {
      case '"':
        seq[1] = '"';
        break;
      case '\\':
        seq[1] = '\\';
        break;
      case '\b':
        seq[1] = 'b';
        break;
      case '\f':
        seq[1] = 'f';
        break;
      case '\n':
        seq[1] = 'n';
        break;
      case '\r':
        seq[1] = 'r';
        break;
      case '\t':
        seq[1] = 't';
        break;
      default:
        seq[1] = 'u';
        seq[2] = '0';
        seq[3] = '0';
        seq[4] = hexd[c >> 4];
        seq[5] = hexd[c & 15];
        len = 6;
        break;
    }
    put(o, seq, len);
  }
  put(o, s + start, n - start);
  o->p[o->len++] = '"';
}

/* A scanned string's value written as jansson writes it: its raw bytes when it holds no escape
 * (they need none), else decoded into scratch (at least v->n bytes) and escaped again. At most
 * v->n + 2 bytes: no escape grows when it is written again. */
static void put_string(struct out *o, const val_t *v, char *scratch) {
  if (!v->escaped) {
    o->p[o->len++] = '"';
    put(o, v->s, v->n);
    o->p[o->len++] = '"';
    return;
  }
  put_escaped(o, scratch, json_scan_unescape(v->s, v->n, scratch));
}

/* An identifier the struct returns, copied into the owned block; NULL when n is 0. */
static const char *own(char **mem, const char *s, size_t n) {
  if (n == 0) return NULL;
  char *d = *mem;
  memcpy(d, s, n);
  d[n] = '\0';
  *mem += n + 1;
  return d;
}

/* elevenlabs.c's map_status on a string without escapes (or absent/not a string). */
static const char *map_status(const val_t *v, size_t *n) {
  *n = 0;
  if (equals(v, "done")) return "completed";
  if (equals(v, "failed")) return "failed";
  size_t u = usable(v, MODEL_STATUS_MAX - 1);
  if (u) {
    *n = u;
    return v->s;
  }
  return "completed";
}

/* Builds e->derived and e->conv, as derive() in elevenlabs.c; false only when out of memory. */
static bool derive(struct el_event *e, struct fields *f, enum el_type type) {
  bool failure = type == EL_CALL_INITIATION_FAILURE;
  size_t conv_n = f->conversation_id.n;
  size_t agent_n = usable(&f->agent_id, MODEL_AGENT_ID_MAX);

  /* emailId, accountId: variable_id of elevenlabs.c */
  char digits[2][24];
  const char *ids[2] = {NULL, NULL};
  size_t ids_n[2] = {0, 0};
  const val_t *vars[2] = {&f->email, &f->account};
  const size_t maxes[2] = {MODEL_EMAIL_ID_MAX, MODEL_ACCOUNT_ID_MAX};
  for (int k = 0; k < 2; k++) {
    const val_t *v = vars[k];
    if (!v->seen) continue;
    if (v->kind == JSON_SCAN_STRING) {
      ids_n[k] = usable(v, maxes[k]);
      ids[k] = ids_n[k] ? v->s : NULL;
    } else if (v->kind == JSON_SCAN_INT) {
      int n = snprintf(digits[k], sizeof digits[k], "%" PRId64, int_value(v));
      if (n > 0 && (size_t)n <= maxes[k]) {
        ids[k] = digits[k];
        ids_n[k] = (size_t)n;
      }
    }
  }

  /* Turn times are offsets from the call's start; without one, from the event's time. */
  const double limit_s = (double)(TIME_MAX_US / 1000000);
  int64_t base_us = 0;
  bool has_start = seconds_to_us(&f->start_time, limit_s, &base_us);
  bool has_base = has_start || seconds_to_us(&f->event_ts, limit_s, &base_us);
  int64_t start_us = base_us;
  bool start_from_turns = !has_start;

  size_t status_n;
  const char *status = failure ? "failed" : map_status(&f->status, &status_n);
  if (failure) status_n = 0;

  /* failureReason: failure_reason() of elevenlabs.c, on the decoded value. */
  char reason[MODEL_FAILURE_REASON_MAX + 1];
  size_t reason_n = 0;
  size_t turns = failure || !f->transcript_array ? 0 : f->nturns;
  size_t scratch_n = f->failure_reason.n;
  for (size_t i = 0; i < turns; i++) {
    if (f->turns[i].role.n > scratch_n) scratch_n = f->turns[i].role.n;
    if (f->turns[i].message.n > scratch_n) scratch_n = f->turns[i].message.n;
  }
  if (f->status.n > scratch_n) scratch_n = f->status.n;
  char *scratch = malloc(scratch_n + 1);
  if (!scratch) return false;
  if (failure && is_string(&f->failure_reason) && f->failure_reason.n > 0) {
    size_t n = f->failure_reason.n;
    const char *s = f->failure_reason.s;
    if (f->failure_reason.escaped) {
      n = json_scan_unescape(s, n, scratch);
      s = scratch;
    }
    if (n > 0) reason_n = model_elevenlabs_clean_reason(reason, sizeof reason, s, n);
  }

  /* The summary: data.analysis's raw bytes. */
  const char *raw = "null";
  size_t raw_n = 4;
  if (!failure && f->analysis.seen) {
    raw = f->analysis.s;
    raw_n = f->analysis.n;
  }

  /* Every part's bound: identifiers need no escape, strings never grow when written again. */
  size_t cap =
      512 + 3 * conv_n + ids_n[0] + ids_n[1] + agent_n + f->status.n + 6 * reason_n + raw_n;
  for (size_t i = 0; i < turns; i++)
    cap += 160 + conv_n + f->turns[i].role.n + f->turns[i].message.n;
  struct out o = {malloc(cap), 0};
  if (!o.p) {
    free(scratch);
    return false;
  }

  puts_(&o, "{\"emailId\":");
  if (ids[0]) {
    o.p[o.len++] = '"';
    put(&o, ids[0], ids_n[0]);
    o.p[o.len++] = '"';
  } else {
    puts_(&o, "null");
  }
  puts_(&o, ",\"accountId\":");
  if (ids[1]) {
    o.p[o.len++] = '"';
    put(&o, ids[1], ids_n[1]);
    o.p[o.len++] = '"';
  } else {
    puts_(&o, "null");
  }
  puts_(&o, ",\"conversationId\":\"");
  put(&o, f->conversation_id.s, conv_n);
  puts_(&o, "\",\"transcript\":[");
  for (size_t i = 0; i < turns; i++) {
    const struct turn *t = &f->turns[i];
    if (i) o.p[o.len++] = ',';
    puts_(&o, "{\"timestamp\":");
    int64_t off_us;
    char ts[40];
    bool has_ts = false;
    if (has_base && seconds_to_us(&t->time, limit_s, &off_us)) {
      int64_t us = base_us + off_us;
      if (time_format_us(us, false, ts, sizeof ts)) {
        has_ts = true;
        if (start_from_turns && (!has_start || us < start_us)) {
          has_start = true;
          start_us = us;
        }
      }
    }
    if (has_ts) {
      o.p[o.len++] = '"';
      puts_(&o, ts);
      o.p[o.len++] = '"';
    } else {
      puts_(&o, "null");
    }
    puts_(&o, ",\"speaker\":");
    put_string(&o, &t->role, scratch);
    puts_(&o, ",\"content\":");
    if (is_string(&t->message))
      put_string(&o, &t->message, scratch);
    else
      puts_(&o, "\"\"");
    puts_(&o, ",\"messageId\":\"");
    put(&o, f->conversation_id.s, conv_n);
    char idx[24]; /* ":<i>", written backwards */
    size_t at = sizeof idx, x = i;
    do {
      idx[--at] = (char)('0' + x % 10);
      x /= 10;
    } while (x);
    idx[--at] = ':';
    put(&o, idx + at, sizeof idx - at);
    puts_(&o, "\"}");
  }
  int64_t duration = duration_secs(&f->call_duration);
  char num[64];
  puts_(&o, "],\"metadata\":{\"agentId\":");
  if (agent_n) {
    o.p[o.len++] = '"';
    put(&o, f->agent_id.s, agent_n);
    o.p[o.len++] = '"';
  } else {
    puts_(&o, "null");
  }
  snprintf(num, sizeof num, ",\"duration\":%" PRId64 ",\"messageCount\":%zu", duration, turns);
  puts_(&o, num);
  puts_(&o, ",\"platform\":\"elevenlabs\",\"source\":\"elevenlabs\"");
  if (is_string(&f->status)) {
    puts_(&o, ",\"status\":");
    put_string(&o, &f->status, scratch);
  }
  if (reason_n) {
    puts_(&o, ",\"failureReason\":");
    put_escaped(&o, reason, reason_n);
  }
  puts_(&o, "},\"summary\":");
  put(&o, raw, raw_n);
  o.p[o.len++] = '}';
  o.p[o.len] = '\0';
  free(scratch);

  /* The struct's strings, in one block. */
  size_t outcome_n =
      failure || !f->analysis_object ? 0 : usable(&f->call_successful, MODEL_AGENT_ID_MAX);
  char *mem = malloc(conv_n + ids_n[0] + ids_n[1] + agent_n + status_n + reason_n + outcome_n + 7);
  if (!mem) {
    free(o.p);
    return false;
  }
  e->owned = mem;
  e->derived = o.p;
  e->derived_len = o.len;
  struct conversation_input *c = &e->conv;
  c->conversation_id = own(&mem, f->conversation_id.s, conv_n);
  e->conversation_id = c->conversation_id;
  c->email_id = own(&mem, ids[0], ids_n[0]);
  c->account_id = own(&mem, ids[1], ids_n[1]);
  c->agent_id = own(&mem, f->agent_id.s, agent_n);
  c->status = status_n ? own(&mem, status, status_n) : status;
  c->failure_reason = own(&mem, reason, reason_n);
  c->platform = "elevenlabs";
  c->outcome = own(&mem, f->call_successful.s, outcome_n);
  if (has_start && (start_us < TIME_MIN_US || start_us > TIME_MAX_US - duration * 1000000))
    has_start = false;
  c->has_start = has_start;
  c->start_us = has_start ? start_us : 0;
  c->duration = duration;
  c->message_count = (int64_t)turns;
  return true;
}

/* Declines (false) what the fast path does not answer; fills *e otherwise. */
static bool map(struct fields *f, struct el_event *e) {
  /* The type: copy_type_name and the classification of elevenlabs.c. */
  if (is_string(&f->type)) {
    if (f->type.escaped) return false;
    size_t n = utf8_sanitize(e->type_name, sizeof e->type_name, f->type.s, f->type.n);
    for (size_t i = 0; i < n; i++)
      if ((unsigned char)e->type_name[i] < 0x20 || e->type_name[i] == 0x7f) e->type_name[i] = '?';
  }
  enum el_type type = EL_OTHER;
  if (equals(&f->type, "post_call_transcription"))
    type = EL_POST_CALL_TRANSCRIPTION;
  else if (equals(&f->type, "post_call_audio"))
    type = EL_POST_CALL_AUDIO;
  else if (equals(&f->type, "call_initiation_failure"))
    type = EL_CALL_INITIATION_FAILURE;
  e->type = type;

  /* Every identifier the mapping compares or returns must be read as is. */
  const val_t *plain[] = {&f->conversation_id, &f->agent_id, &f->status,
                          &f->email,           &f->account,  &f->call_successful};
  for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
    if (is_string(plain[i]) && plain[i]->escaped) return false;

  size_t conv_n = usable(&f->conversation_id, MODEL_CONVERSATION_ID_MAX);
  if (type == EL_OTHER || type == EL_POST_CALL_AUDIO) {
    if (type != EL_OTHER && !conv_n) return false; /* check_conversation_id's problems */
    if (conv_n) {
      e->owned = malloc(conv_n + 1);
      if (!e->owned) return false;
      memcpy(e->owned, f->conversation_id.s, conv_n);
      e->owned[conv_n] = '\0';
      e->conversation_id = e->owned;
    }
    return true;
  }
  if (!conv_n) return false;
  if (type == EL_POST_CALL_TRANSCRIPTION && f->transcript_array)
    for (size_t i = 0; i < f->nturns; i++) /* check_turns: every turn an object with a role */
      if (!f->turns[i].object || !is_string(&f->turns[i].role)) return false;
  return derive(e, f, type);
}

bool model_elevenlabs_scan(const char *body, size_t len, const struct el_names *names,
                           struct el_event *out) {
  memset(out, 0, sizeof *out);
  struct fields f;
  memset(&f, 0, sizeof f);
  f.names = names;
  struct json_scan sc = {body, body + len, EL_FAST_KEYS_MAX};
  const struct json_scan_member want[] = {{"type", &f.type, NULL, NULL},
                                          {"event_timestamp", &f.event_ts, NULL, NULL},
                                          {"data", NULL, data, &f}};
  json_scan_ws(&sc);
  bool ok = sc.p < sc.end && *sc.p == '{' && json_scan_object(&sc, 1, want, 3);
  if (ok) {
    json_scan_ws(&sc);
    ok = sc.p == sc.end;
  }
  /* One variable may name both (json_object_get finds it twice; the scanner fills one slot). */
  if (ok && strcmp(names->email_var, names->account_var) == 0) f.account = f.email;
  ok = ok && map(&f, out);
  free(f.turns);
  if (!ok) {
    model_elevenlabs_free(out);
    memset(out, 0, sizeof *out);
  }
  return ok;
}

enum model_result model_elevenlabs_parse_fast(const char *body, size_t len,
                                              const struct el_names *names, struct el_event *out,
                                              json_t **problems, char *message,
                                              size_t message_len) {
  if (model_elevenlabs_scan(body, len, names, out)) {
    *problems = NULL;
    return MODEL_OK;
  }
  return model_elevenlabs_parse(body, len, names, out, problems, message, message_len);
}
