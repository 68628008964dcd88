/* The analytics answer from the store's cells (see analytics.h). */
#include "model/analytics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"
#include "core/utf8.h"
#include "model/conversation.h"

#define US_PER_S 1000000LL

struct sums {
  int64_t conversations, messages, duration_sum;
};

struct entry {
  char *key; /* NULL: unknown */
  struct sums s;
};

/* Distinct values of one dimension: open addressing over entries (slot holds index + 1). */
struct vmap {
  struct entry *items;
  size_t count, cap;
  size_t *slots;
  size_t nslots;
  bool has_null;
  size_t null_index;
  size_t last; /* index + 1 of the last key found (cells often repeat a value), 0: none */
};

struct analytics {
  const struct tz *zone;
  enum tz_interval iv;
  int64_t from_us, to_us;
  int64_t *cuts; /* microseconds */
  size_t ncuts;
  int64_t first_start; /* seconds: the start of the interval holding from_us */
  struct sums *series; /* ncuts + 1 */
  struct sums total;
  uint64_t hist[ANALYTICS_HIST_BUCKETS];
  struct vmap dims[ANALYTICS_DIM_COUNT];
};

static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

enum analytics_result analytics_new(const struct tz *z, enum tz_interval iv, int64_t from_us,
                                    int64_t to_us, size_t max_points, struct analytics **out) {
  *out = NULL;
  struct analytics *a = calloc(1, sizeof *a);
  if (!a) return ANALYTICS_NO_MEMORY;
  a->zone = z;
  a->iv = iv;
  a->from_us = from_us;
  a->to_us = to_us;
  a->first_start = tz_interval_floor(z, iv, floor_div(from_us, US_PER_S));
  size_t cap = 0;
  for (int64_t t = tz_interval_next(z, iv, a->first_start); t < floor_div(to_us - 1, US_PER_S) + 1;
       t = tz_interval_next(z, iv, t)) {
    /* t * US_PER_S < to_us: t is a whole second at or below (to_us - 1) / 1e6 */
    if (a->ncuts + 1 >= max_points) {
      analytics_free(a);
      return ANALYTICS_TOO_MANY_POINTS;
    }
    if (a->ncuts == cap) {
      size_t ncap = cap ? cap * 2 : 64;
      int64_t *p = realloc(a->cuts, ncap * sizeof *p);
      if (!p) {
        analytics_free(a);
        return ANALYTICS_NO_MEMORY;
      }
      a->cuts = p;
      cap = ncap;
    }
    a->cuts[a->ncuts++] = t * US_PER_S;
  }
  /* every start label is a local date-time in years 0001..9999 (tz_format would clamp it) */
  int64_t last = a->ncuts ? a->cuts[a->ncuts - 1] / US_PER_S : a->first_start;
  enum analytics_result range = ANALYTICS_OK;
  if (a->first_start + tz_offset_at(z, a->first_start) < TIME_MIN_US / US_PER_S)
    range = ANALYTICS_FROM_OUT_OF_RANGE;
  else if (last + tz_offset_at(z, last) > TIME_MAX_US / US_PER_S)
    range = ANALYTICS_TO_OUT_OF_RANGE;
  if (range != ANALYTICS_OK) {
    analytics_free(a);
    return range;
  }
  a->series = calloc(a->ncuts + 1, sizeof *a->series);
  if (!a->series) {
    analytics_free(a);
    return ANALYTICS_NO_MEMORY;
  }
  *out = a;
  return ANALYTICS_OK;
}

static void vmap_free(struct vmap *m) {
  for (size_t i = 0; i < m->count; i++) free(m->items[i].key);
  free(m->items);
  free(m->slots);
  memset(m, 0, sizeof *m);
}

void analytics_free(struct analytics *a) {
  if (!a) return;
  for (int d = 0; d < ANALYTICS_DIM_COUNT; d++) vmap_free(&a->dims[d]);
  free(a->cuts);
  free(a->series);
  free(a);
}

const int64_t *analytics_cuts(const struct analytics *a, size_t *n) {
  *n = a->ncuts;
  return a->cuts;
}

size_t analytics_points(const struct analytics *a) { return a->ncuts + 1; }

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
  return h;
}

static bool vmap_grow(struct vmap *m) {
  size_t n = m->nslots ? m->nslots * 2 : 64;
  size_t *slots = calloc(n, sizeof *slots);
  if (!slots) return false;
  for (size_t i = 0; i < m->count; i++) {
    if (!m->items[i].key) continue;
    size_t j = hash_str(m->items[i].key) & (n - 1);
    while (slots[j]) j = (j + 1) & (n - 1);
    slots[j] = i + 1;
  }
  free(m->slots);
  m->slots = slots;
  m->nslots = n;
  return true;
}

static bool vmap_push(struct vmap *m, const char *key, size_t *index) {
  if (m->count == m->cap) {
    size_t ncap = m->cap ? m->cap * 2 : 16;
    struct entry *p = realloc(m->items, ncap * sizeof *p);
    if (!p) return false;
    m->items = p;
    m->cap = ncap;
  }
  char *copy = NULL;
  if (key && !(copy = strdup(key))) return false;
  m->items[m->count] = (struct entry){.key = copy};
  *index = m->count++;
  return true;
}

/* The entry of key (NULL: the unknown value), added when new; NULL when out of memory. */
static struct entry *vmap_get(struct vmap *m, const char *key) {
  size_t index;
  if (!key) {
    if (!m->has_null) {
      if (!vmap_push(m, NULL, &index)) return NULL;
      m->has_null = true;
      m->null_index = index;
    }
    return &m->items[m->null_index];
  }
  if (m->last && strcmp(m->items[m->last - 1].key, key) == 0) return &m->items[m->last - 1];
  if ((m->count + 1) * 2 > m->nslots && !vmap_grow(m)) return NULL;
  size_t j = hash_str(key) & (m->nslots - 1);
  while (m->slots[j]) {
    size_t i = m->slots[j] - 1;
    if (m->items[i].key && strcmp(m->items[i].key, key) == 0) {
      m->last = i + 1;
      return &m->items[i];
    }
    j = (j + 1) & (m->nslots - 1);
  }
  if (!vmap_push(m, key, &index)) return NULL;
  m->slots[j] = index + 1;
  m->last = index + 1;
  return &m->items[index];
}

static void sums_add(struct sums *s, const struct analytics_cell *c) {
  s->conversations += c->conversations;
  s->messages += c->messages;
  s->duration_sum += c->duration_sum;
}

static void sums_merge(struct sums *s, const struct sums *o) {
  s->conversations += o->conversations;
  s->messages += o->messages;
  s->duration_sum += o->duration_sum;
}

/* The series point holding at_us: the number of cuts at or before it (clamped to the range). */
static size_t point_of(const struct analytics *a, int64_t at_us) {
  size_t lo = 0, hi = a->ncuts;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (a->cuts[mid] <= at_us)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static bool add_to_dim(struct analytics *a, int d, const char *value,
                       const struct analytics_cell *c) {
  struct entry *e = vmap_get(&a->dims[d], value);
  if (!e) return false;
  sums_add(&e->s, c);
  return true;
}

bool analytics_add(struct analytics *a, const struct analytics_cell *c) {
  if (c->hist)
    for (int b = 0; b < ANALYTICS_HIST_BUCKETS; b++) a->hist[b] += c->hist[b];
  if (c->kind == ANALYTICS_CELL_DIM) {
    if ((int)c->dim < 0 || c->dim >= ANALYTICS_DIM_COUNT) return true;
    return add_to_dim(a, c->dim, c->value[c->dim], c);
  }
  sums_add(&a->total, c);
  sums_add(&a->series[point_of(a, c->at_us)], c);
  if (c->kind == ANALYTICS_CELL_FULL)
    for (int d = 0; d < ANALYTICS_DIM_COUNT; d++)
      if (!add_to_dim(a, d, c->value[d], c)) return false;
  return true;
}

int64_t analytics_avg_milli(int64_t sum, int64_t n) {
  if (sum <= INT64_MAX / 2000) return (sum * 2000 + n) / (2 * n);
  /* past 4.6e15 seconds summed: whole seconds and the remainder apart */
  int64_t q = sum / n, r = sum % n;
  return q * 1000 + (int64_t)(((double)r * 1000 + (double)n / 2) / (double)n);
}

int64_t analytics_percentile(const uint64_t hist[ANALYTICS_HIST_BUCKETS], int64_t n, int p) {
  /* rank ceil(p * n / 100), at least 1 */
  uint64_t rank = ((uint64_t)n * (uint64_t)p + 99) / 100;
  if (rank < 1) rank = 1;
  uint64_t seen = 0;
  for (int b = 0; b < ANALYTICS_HIST_BUCKETS; b++) {
    seen += hist[b];
    if (seen >= rank) return analytics_hist_lower(b);
  }
  /* the histogram counts fewer than n (not expected): the highest bucket with any */
  for (int b = ANALYTICS_HIST_BUCKETS - 1; b >= 0; b--)
    if (hist[b]) return analytics_hist_lower(b);
  return 0;
}

/* ---- rendering ---- */

/* The answer is written by hand, not through a JSON tree: a year of hours is 8,760 series points,
 * and a tree of them cost several times the rest of the request. */
struct out {
  char *p;
  size_t len, cap;
  bool oom;
};

static void out_mem(struct out *o, const char *s, size_t n) {
  if (o->oom) return;
  if (o->len + n + 1 > o->cap) {
    size_t cap = o->cap ? o->cap : 4096;
    while (o->len + n + 1 > cap) cap *= 2;
    char *p = realloc(o->p, cap);
    if (!p) {
      o->oom = true;
      return;
    }
    o->p = p;
    o->cap = cap;
  }
  memcpy(o->p + o->len, s, n);
  o->len += n;
  o->p[o->len] = '\0';
}

static void out_str(struct out *o, const char *s) { out_mem(o, s, strlen(s)); }

static void out_int(struct out *o, int64_t v) {
  char buf[24], *p = buf + sizeof buf;
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) *--p = '-';
  out_mem(o, p, (size_t)(buf + sizeof buf - p));
}

/* A JSON string as jansson writes one (UTF-8 as is; '"', '\' and controls escaped); bytes that
 * are not UTF-8 (not expected: stored values were) as U+FFFD; NULL: null. */
static void out_json_str(struct out *o, const char *s) {
  if (!s) {
    out_str(o, "null");
    return;
  }
  size_t len = strlen(s);
  char *clean = NULL;
  if (!utf8_valid(s, len)) {
    size_t cap = len * 3 + 1;
    if (!(clean = malloc(cap))) {
      o->oom = true;
      return;
    }
    len = utf8_sanitize(clean, cap, s, len);
    s = clean;
  }
  out_str(o, "\"");
  size_t run = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out_mem(o, s + run, i - run);
    run = i + 1;
    char esc[8];
    switch (c) {
      case '"':
        out_str(o, "\\\"");
        break;
      case '\\':
        out_str(o, "\\\\");
        break;
      case '\b':
        out_str(o, "\\b");
        break;
      case '\f':
        out_str(o, "\\f");
        break;
      case '\n':
        out_str(o, "\\n");
        break;
      case '\r':
        out_str(o, "\\r");
        break;
      case '\t':
        out_str(o, "\\t");
        break;
      default:
        snprintf(esc, sizeof esc, "\\u%04X", c);
        out_str(o, esc);
    }
  }
  out_mem(o, s + run, len - run);
  out_str(o, "\"");
  free(clean);
}

/* The mean to 3 decimals as a JSON number ("6.5", "300.0", "0.001"), or null for nothing:
 * the shortest text of the value, as jansson and Python print that double. */
static void out_avg(struct out *o, const struct sums *s) {
  if (s->conversations <= 0) {
    out_str(o, "null");
    return;
  }
  int64_t milli = analytics_avg_milli(s->duration_sum, s->conversations);
  out_int(o, milli / 1000);
  /* the thousandths, trailing zeros dropped but one ("206.02", "3.0") */
  int64_t frac = milli % 1000;
  char buf[5] = {'.', (char)('0' + frac / 100), (char)('0' + frac / 10 % 10),
                 (char)('0' + frac % 10), '\0'};
  size_t n = 4;
  while (n > 2 && buf[n - 1] == '0') n--;
  out_mem(o, buf, n);
}

/* "conversations":N,"messages":N,"durationSeconds":{"sum":N,"avg":X} */
static void out_sums(struct out *o, const struct sums *s) {
  out_str(o, "\"conversations\":");
  out_int(o, s->conversations);
  out_str(o, ",\"messages\":");
  out_int(o, s->messages);
  out_str(o, ",\"durationSeconds\":{\"sum\":");
  out_int(o, s->duration_sum);
  out_str(o, ",\"avg\":");
  out_avg(o, s);
  out_str(o, "}");
}

/* rest: the entry summing the values past the top ("key": "other", "rest": true), told apart
 * from a real value "other" (which has no "rest"). */
static void out_entry(struct out *o, const char *key, bool rest, const struct sums *s) {
  out_str(o, "{\"key\":");
  out_json_str(o, key);
  out_str(o, rest ? ",\"rest\":true," : ",");
  out_sums(o, s);
  out_str(o, "}");
}

/* Conversations descending; ties: the key's bytes ascending, unknown (NULL) last. */
static int entry_cmp(const void *pa, const void *pb) {
  const struct entry *a = pa, *b = pb;
  if (a->s.conversations != b->s.conversations)
    return a->s.conversations > b->s.conversations ? -1 : 1;
  if (!a->key || !b->key) return (a->key == NULL) - (b->key == NULL);
  return strcmp(a->key, b->key);
}

static const struct sums *vmap_find(const struct vmap *m, const char *key) {
  if (!m->nslots) return NULL;
  size_t j = hash_str(key) & (m->nslots - 1);
  while (m->slots[j]) {
    const struct entry *e = &m->items[m->slots[j] - 1];
    if (e->key && strcmp(e->key, key) == 0) return &e->s;
    j = (j + 1) & (m->nslots - 1);
  }
  return NULL;
}

/* Every account value of m named through name, in batches: values naming the same account become
 * one entry (m is replaced by the named map); a value naming none goes to *unnamed. */
static int name_accounts(struct vmap *m, struct sums *unnamed, bool *has_unnamed,
                         analytics_names_fn name, void *cls) {
  struct vmap named = {0};
  const char **stored = malloc(ANALYTICS_NAME_BATCH * sizeof *stored);
  char **names = malloc(ANALYTICS_NAME_BATCH * sizeof *names);
  size_t *from = malloc(ANALYTICS_NAME_BATCH * sizeof *from);
  int rc = stored && names && from ? 0 : -1;
  size_t i = 0;
  while (rc == 0 && i < m->count) {
    size_t n = 0;
    for (; rc == 0 && i < m->count && n < ANALYTICS_NAME_BATCH; i++) {
      struct entry *e = &m->items[i];
      if (e->key) {
        stored[n] = e->key;
        names[n] = NULL;
        from[n++] = i;
        continue;
      }
      struct entry *t = vmap_get(&named, NULL);
      if (t)
        sums_merge(&t->s, &e->s);
      else
        rc = -1;
    }
    if (rc != 0 || n == 0) break;
    rc = name(cls, stored, n, names);
    for (size_t k = 0; k < n; k++) {
      if (rc == 0 && !names[k]) {
        sums_merge(unnamed, &m->items[from[k]].s);
        *has_unnamed = true;
      } else if (rc == 0) {
        struct entry *t = vmap_get(&named, names[k]);
        if (t)
          sums_merge(&t->s, &m->items[from[k]].s);
        else
          rc = -1;
      }
      free(names[k]);
    }
  }
  free(stored);
  free(names);
  free(from);
  if (rc != 0) {
    vmap_free(&named);
    return rc;
  }
  vmap_free(m);
  *m = named;
  return 0;
}

/* The breakdown of dimension d: sorts the map's entries in place (it is not searched after). */
static int breakdown_out(struct analytics *a, int d, analytics_names_fn name, void *cls,
                         struct out *o) {
  struct vmap *m = &a->dims[d];
  struct sums other = {0};
  bool has_other = false;
  if (d == ANALYTICS_DIM_ACCOUNT && name && m->count) {
    int rc = name_accounts(m, &other, &has_other, name, cls);
    if (rc != 0) return rc;
  }
  if (m->count) qsort(m->items, m->count, sizeof *m->items, entry_cmp);
  free(m->slots); /* positions moved: the map is a list from here on */
  m->slots = NULL;
  m->nslots = 0;
  m->has_null = false;
  m->last = 0;
  size_t top = m->count < ANALYTICS_TOP ? m->count : ANALYTICS_TOP;
  has_other = has_other || m->count > top;
  for (size_t i = top; i < m->count; i++) sums_merge(&other, &m->items[i].s);
  out_str(o, "[");
  for (size_t i = 0; i < top; i++) {
    if (i) out_str(o, ",");
    out_entry(o, m->items[i].key, false, &m->items[i].s);
  }
  if (has_other) {
    if (top) out_str(o, ",");
    out_entry(o, "other", true, &other);
  }
  out_str(o, "]");
  return 0;
}

static void out_percentile(struct out *o, const struct analytics *a, int p) {
  if (a->total.conversations <= 0)
    out_str(o, "null");
  else
    out_int(o, analytics_percentile(a->hist, a->total.conversations, p));
}

static int64_t status_count(const struct analytics *a, const char *status) {
  const struct sums *s = vmap_find(&a->dims[ANALYTICS_DIM_STATUS], status);
  return s ? s->conversations : 0;
}

static const char *const dim_names[ANALYTICS_DIM_COUNT] = {[ANALYTICS_DIM_ACCOUNT] = "byAccount",
                                                           [ANALYTICS_DIM_AGENT] = "byAgent",
                                                           [ANALYTICS_DIM_PLATFORM] = "byPlatform",
                                                           [ANALYTICS_DIM_STATUS] = "byStatus",
                                                           [ANALYTICS_DIM_OUTCOME] = "byOutcome"};

/* The order the answer lists them in. */
static const int dim_order[ANALYTICS_DIM_COUNT] = {ANALYTICS_DIM_STATUS, ANALYTICS_DIM_PLATFORM,
                                                   ANALYTICS_DIM_AGENT, ANALYTICS_DIM_ACCOUNT,
                                                   ANALYTICS_DIM_OUTCOME};

static const char *const interval_names[] = {
    [TZ_HOUR] = "hour", [TZ_DAY] = "day", [TZ_WEEK] = "week"};

int analytics_render(struct analytics *a, const char *tz_name, analytics_names_fn name, void *cls,
                     char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  struct out o = {0};
  const struct sums *t = &a->total;
  out_str(&o, "{\"totals\":{\"conversations\":");
  out_int(&o, t->conversations);
  out_str(&o, ",\"completed\":");
  out_int(&o, status_count(a, "completed"));
  out_str(&o, ",\"failed\":");
  out_int(&o, status_count(a, "failed"));
  out_str(&o, ",\"messages\":");
  out_int(&o, t->messages);
  out_str(&o, ",\"durationSeconds\":{\"sum\":");
  out_int(&o, t->duration_sum);
  out_str(&o, ",\"avg\":");
  out_avg(&o, t);
  out_str(&o, ",\"p50\":");
  out_percentile(&o, a, 50);
  out_str(&o, ",\"p90\":");
  out_percentile(&o, a, 90);
  out_str(&o, ",\"p99\":");
  out_percentile(&o, a, 99);
  out_str(&o, "}}");
  for (int i = 0; i < ANALYTICS_DIM_COUNT; i++) {
    int d = dim_order[i];
    out_str(&o, ",\"");
    out_str(&o, dim_names[d]);
    out_str(&o, "\":");
    int rc = breakdown_out(a, d, name, cls, &o);
    if (rc != 0) {
      free(o.p);
      return rc;
    }
  }
  out_str(&o, ",\"series\":[");
  for (size_t i = 0; i <= a->ncuts; i++) {
    int64_t start = i == 0 ? a->first_start : a->cuts[i - 1] / US_PER_S;
    char text[64];
    tz_format(a->zone, start, text, sizeof text); /* digits and -+:TZ only: nothing to escape */
    out_str(&o, i ? ",{\"start\":\"" : "{\"start\":\"");
    out_str(&o, text);
    out_str(&o, "\",");
    out_sums(&o, &a->series[i]);
    out_str(&o, "}");
  }
  char from[40], to[40];
  if (!time_format_us(a->from_us, false, from, sizeof from) ||
      !time_format_us(a->to_us, false, to, sizeof to)) {
    free(o.p);
    return -1;
  }
  out_str(&o, "],\"query\":{\"from\":");
  out_json_str(&o, from);
  out_str(&o, ",\"to\":");
  out_json_str(&o, to);
  out_str(&o, ",\"interval\":");
  out_json_str(&o, interval_names[a->iv]);
  out_str(&o, ",\"tz\":");
  out_json_str(&o, tz_name);
  out_str(&o, "}}");
  if (o.oom) {
    free(o.p);
    return -1;
  }
  *out = o.p;
  *len = o.len;
  return 0;
}
