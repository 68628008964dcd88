/* Analytics rollups shared by both backends (see rollup.h). */
#include "store/rollup.h"

#include <stdlib.h>
#include <string.h>

int64_t rollup_floor(int64_t t, int64_t unit) {
  int64_t q = t / unit;
  if (t % unit != 0 && t < 0) q--;
  return q * unit;
}

static int64_t rollup_ceil(int64_t t, int64_t unit) {
  int64_t f = rollup_floor(t, unit);
  return f == t ? t : f + unit;
}

void rollup_map_init(struct rollup_map *m, bool coarse_levels) {
  memset(m, 0, sizeof *m);
  m->levels = coarse_levels;
}

static void entry_free(struct rollup_entry *e) {
  for (int i = 0; i < STORE_DIM_COUNT; i++) free(e->vals[i]);
}

void rollup_map_clear(struct rollup_map *m) {
  for (size_t i = 0; i < m->n; i++) entry_free(&m->e[i]);
  m->n = 0;
  for (size_t i = 0; i < m->nslots; i++) m->slots[i] = SIZE_MAX;
  m->oom = false;
  m->last_valid = false;
}

void rollup_map_free(struct rollup_map *m) {
  for (size_t i = 0; i < m->n; i++) entry_free(&m->e[i]);
  free(m->e);
  free(m->slots);
  memset(m, 0, sizeof *m);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= UINT64_C(1099511628211);
  }
  return h;
}

static const char *nz(const char *s) { return s ? s : ""; }

static uint64_t key_hash(enum rollup_level level, int dim, int64_t at, const char *const *vals,
                         int nvals) {
  uint64_t h = UINT64_C(14695981039346656037);
  int head[2] = {(int)level, dim};
  h = fnv(h, head, sizeof head);
  h = fnv(h, &at, sizeof at);
  for (int i = 0; i < nvals; i++) h = fnv(h, nz(vals[i]), strlen(nz(vals[i])) + 1);
  return h;
}

static bool key_equal(const struct rollup_entry *e, enum rollup_level level, int dim, int64_t at,
                      const char *const *vals, int nvals) {
  if (e->level != level || e->dim != dim || e->at_us != at) return false;
  for (int i = 0; i < nvals; i++)
    if (strcmp(e->vals[i], nz(vals[i])) != 0) return false;
  return true;
}

static bool grow(struct rollup_map *m) {
  if (m->n < m->cap) return true;
  size_t cap = m->cap ? m->cap * 2 : 64;
  /* cap, slots and nslots change together, only once both allocations succeeded: a failed
   * growth leaves the map as it was (a first failed growth used to leave cap 64 with nslots 0,
   * and the next add divided by zero). The entries' realloc may move them; keeping the new
   * pointer is safe as the old contents are copied and the map's size is unchanged. */
  size_t nslots = cap * 2;
  size_t *slots = malloc(nslots * sizeof *slots);
  if (!slots) return false;
  struct rollup_entry *e = realloc(m->e, cap * sizeof *e);
  if (!e) {
    free(slots);
    return false;
  }
  m->e = e;
  m->cap = cap;
  for (size_t i = 0; i < nslots; i++) slots[i] = SIZE_MAX;
  for (size_t i = 0; i < m->n; i++) {
    size_t s = (size_t)(m->e[i].hash % nslots);
    m->e[i].next = slots[s];
    slots[s] = i;
  }
  free(m->slots);
  m->slots = slots;
  m->nslots = nslots;
  return true;
}

static struct rollup_entry *find_or_add(struct rollup_map *m, enum rollup_level level, int dim,
                                        int64_t at, const char *const *vals, int nvals) {
  uint64_t h = key_hash(level, dim, at, vals, nvals);
  if (m->nslots) {
    for (size_t i = m->slots[h % m->nslots]; i != SIZE_MAX; i = m->e[i].next)
      if (m->e[i].hash == h && key_equal(&m->e[i], level, dim, at, vals, nvals)) return &m->e[i];
  }
  if (!grow(m)) return NULL;
  struct rollup_entry *e = &m->e[m->n];
  memset(e, 0, sizeof *e);
  e->level = level;
  e->dim = dim;
  e->at_us = at;
  e->hash = h;
  for (int i = 0; i < nvals; i++) {
    if (!(e->vals[i] = strdup(nz(vals[i])))) {
      entry_free(e);
      return NULL;
    }
  }
  size_t s = (size_t)(h % m->nslots);
  e->next = m->slots[s];
  m->slots[s] = m->n++;
  return e;
}

struct rollup_entry *rollup_map_find(struct rollup_map *m, enum rollup_level level, int dim,
                                     int64_t at_us, const char *const *vals) {
  int nvals = level == ROLLUP_FULL || level == ROLLUP_BLOCK ? STORE_DIM_COUNT
              : level == ROLLUP_DIM                         ? 1
                                                            : 0;
  uint64_t h = key_hash(level, dim, at_us, vals, nvals);
  if (!m->nslots) return NULL;
  for (size_t i = m->slots[h % m->nslots]; i != SIZE_MAX; i = m->e[i].next)
    if (m->e[i].hash == h && key_equal(&m->e[i], level, dim, at_us, vals, nvals)) return &m->e[i];
  return NULL;
}

static void entry_add(struct rollup_entry *e, int sign, const struct rollup_row *row, int bucket) {
  e->conversations += sign;
  e->messages += sign * row->messages;
  e->duration_sum += sign * row->duration;
  e->hist[bucket] += sign;
}

/* Whether row's keys are those of the last row added (same hour, same dimensions). */
static bool same_as_last(const struct rollup_map *m, int64_t hour, const struct rollup_row *row) {
  if (!m->last_valid || m->last_hour != hour) return false;
  const struct rollup_entry *full = &m->e[m->last[0]];
  for (int d = 0; d < STORE_DIM_COUNT; d++)
    if (strcmp(full->vals[d], nz(row->dims[d])) != 0) return false;
  return true;
}

bool rollup_map_add(struct rollup_map *m, int sign, const struct rollup_row *row) {
  int bucket = analytics_hist_bucket(row->duration);
  int64_t hour = rollup_floor(row->event_us, ROLLUP_HOUR_US);
  if (same_as_last(m, hour, row)) {
    for (size_t i = 0; i < m->nlast; i++) entry_add(&m->e[m->last[i]], sign, row, bucket);
    return true;
  }
  m->last_valid = false;
  m->nlast = 0;
  struct rollup_entry *e = find_or_add(m, ROLLUP_FULL, 0, hour, row->dims, STORE_DIM_COUNT);
  if (!e) goto oom;
  entry_add(e, sign, row, bucket);
  m->last[m->nlast++] = (size_t)(e - m->e);
  if (m->levels) {
    int64_t day = rollup_floor(row->event_us, ROLLUP_DAY_US);
    int64_t block = rollup_floor(row->event_us, ROLLUP_BLOCK_US);
    static const char *const none[1] = {""};
    struct {
      int dim;
      int64_t at;
      const char *const *vals;
    } keys[ROLLUP_KEYS_PER_ROW - 3] = {
        {ROLLUP_DIM_TOTAL, day, none},
        {ROLLUP_DIM_TOTAL4, rollup_floor(row->event_us, ROLLUP_TOTAL4_US), none}};
    size_t n = 2;
    for (int d = 0; d < STORE_DIM_COUNT; d++) {
      keys[n].dim = d;
      keys[n].at = day;
      keys[n++].vals = &row->dims[d];
      keys[n].dim = ROLLUP_DIM_BLOCK + d;
      keys[n].at = block;
      keys[n++].vals = &row->dims[d];
    }
    if (!(e = find_or_add(m, ROLLUP_BLOCK, 0, block, row->dims, STORE_DIM_COUNT))) goto oom;
    entry_add(e, sign, row, bucket);
    m->last[m->nlast++] = (size_t)(e - m->e);
    if (!(e = find_or_add(m, ROLLUP_TOTAL, 0, hour, NULL, 0))) goto oom;
    entry_add(e, sign, row, bucket);
    m->last[m->nlast++] = (size_t)(e - m->e);
    for (size_t i = 0; i < n; i++) {
      if (!(e = find_or_add(m, ROLLUP_DIM, keys[i].dim, keys[i].at, keys[i].vals, 1))) goto oom;
      entry_add(e, sign, row, bucket);
      m->last[m->nlast++] = (size_t)(e - m->e);
    }
  }
  m->last_valid = true;
  m->last_hour = hour;
  return true;
oom:
  m->oom = true;
  return false;
}

bool rollup_entry_zero(const struct rollup_entry *e) {
  if (e->conversations || e->messages || e->duration_sum) return false;
  for (int b = 0; b < ANALYTICS_HIST_BUCKETS; b++)
    if (e->hist[b]) return false;
  return true;
}

void rollup_hist_encode(const int64_t hist[ANALYTICS_HIST_BUCKETS],
                        unsigned char out[ROLLUP_HIST_BYTES]) {
  for (int b = 0; b < ANALYTICS_HIST_BUCKETS; b++) {
    uint32_t v = (uint32_t)hist[b];
    out[4 * b] = (unsigned char)v;
    out[4 * b + 1] = (unsigned char)(v >> 8);
    out[4 * b + 2] = (unsigned char)(v >> 16);
    out[4 * b + 3] = (unsigned char)(v >> 24);
  }
}

void rollup_hist_add_blob(int64_t hist[ANALYTICS_HIST_BUCKETS], const void *blob, size_t len) {
  if (len != ROLLUP_HIST_BYTES || !blob) return;
  const unsigned char *p = blob;
  for (int b = 0; b < ANALYTICS_HIST_BUCKETS; b++)
    hist[b] += (int64_t)((uint32_t)p[4 * b] | (uint32_t)p[4 * b + 1] << 8 |
                         (uint32_t)p[4 * b + 2] << 16 | (uint32_t)p[4 * b + 3] << 24);
}

/* ---------- scan plans ---------- */

static bool push_raw(struct rollup_plan *p, size_t *cap, int64_t a, int64_t b) {
  if (a >= b) return true;
  if (p->nraw && p->raw[p->nraw - 1][1] == a) { /* contiguous: one range */
    p->raw[p->nraw - 1][1] = b;
    return true;
  }
  if (p->nraw == *cap) {
    size_t n = *cap ? *cap * 2 : 8;
    int64_t(*r)[2] = realloc(p->raw, n * sizeof *r);
    if (!r) return false;
    p->raw = r;
    *cap = n;
  }
  p->raw[p->nraw][0] = a;
  p->raw[p->nraw][1] = b;
  p->nraw++;
  return true;
}

bool rollup_plan_make(const struct store_analytics_query *q, struct rollup_plan *p) {
  memset(p, 0, sizeof *p);
  if (q->from_us >= q->to_us) return true;
  size_t rawcap = 0;
  int64_t h0 = rollup_ceil(q->from_us, ROLLUP_HOUR_US), h1 = rollup_floor(q->to_us, ROLLUP_HOUR_US);
  if (h0 >= h1) return push_raw(p, &rawcap, q->from_us, q->to_us);
  p->hour_from = h0;
  p->hour_to = h1;
  if (q->ncuts) {
    p->straddled = malloc(q->ncuts * sizeof *p->straddled);
    p->uncovered = malloc(q->ncuts * sizeof *p->uncovered);
    if (!p->straddled || !p->uncovered) goto oom;
  }
  for (size_t i = 0; i < q->ncuts; i++) {
    int64_t c = q->cuts[i], h = rollup_floor(c, ROLLUP_HOUR_US);
    if (h == c || h < h0 || h >= h1) continue;
    if (p->nstraddled && p->straddled[p->nstraddled - 1] == h) continue;
    p->straddled[p->nstraddled++] = h;
  }
  if (!push_raw(p, &rawcap, q->from_us, h0)) goto oom;
  for (size_t i = 0; i < p->nstraddled; i++)
    if (!push_raw(p, &rawcap, p->straddled[i], p->straddled[i] + ROLLUP_HOUR_US)) goto oom;
  if (!push_raw(p, &rawcap, h1, q->to_us)) goto oom;
  p->day_from = rollup_ceil(h0, ROLLUP_DAY_US);
  p->day_to = rollup_floor(h1, ROLLUP_DAY_US);
  if (p->day_from >= p->day_to) p->day_from = p->day_to = 0;
  for (size_t i = 0; i < p->nstraddled; i++) {
    int64_t d = rollup_floor(p->straddled[i], ROLLUP_DAY_US);
    if (d < p->day_from || d >= p->day_to) continue;
    if (p->nuncovered && p->uncovered[p->nuncovered - 1] == d) continue;
    p->uncovered[p->nuncovered++] = d;
  }
  if (q->ncuts && (!(p->split = malloc(q->ncuts * sizeof *p->split)) ||
                   !(p->split4 = malloc(q->ncuts * sizeof *p->split4))))
    goto oom;
  for (size_t i = 0; i < q->ncuts; i++) {
    int64_t c = q->cuts[i], d = rollup_floor(c, ROLLUP_DAY_US),
            b = rollup_floor(c, ROLLUP_TOTAL4_US);
    if (d == c || d < p->day_from || d >= p->day_to || rollup_plan_uncovered(p, d)) continue;
    if (!p->nsplit || p->split[p->nsplit - 1] != d) p->split[p->nsplit++] = d;
    if (b != c && (!p->nsplit4 || p->split4[p->nsplit4 - 1] != b)) p->split4[p->nsplit4++] = b;
  }
  p->block_from = rollup_ceil(p->day_from, ROLLUP_BLOCK_US);
  p->block_to = rollup_floor(p->day_to, ROLLUP_BLOCK_US);
  if (p->day_from == p->day_to || p->block_from >= p->block_to) p->block_from = p->block_to = 0;
  if (p->nuncovered && !(p->bad = malloc(p->nuncovered * sizeof *p->bad))) goto oom;
  for (size_t i = 0; i < p->nuncovered; i++) {
    int64_t b = rollup_floor(p->uncovered[i], ROLLUP_BLOCK_US);
    if (b < p->block_from || b >= p->block_to) continue;
    if (p->nbad && p->bad[p->nbad - 1] == b) continue;
    p->bad[p->nbad++] = b;
  }
  return true;
oom:
  rollup_plan_free(p);
  return false;
}

void rollup_plan_free(struct rollup_plan *p) {
  free(p->straddled);
  free(p->uncovered);
  free(p->split);
  free(p->split4);
  free(p->bad);
  free(p->raw);
  memset(p, 0, sizeof *p);
}

static bool sorted_has(const int64_t *v, size_t n, int64_t x) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (v[mid] == x) return true;
    if (v[mid] < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return false;
}

bool rollup_plan_straddled(const struct rollup_plan *p, int64_t h) {
  return sorted_has(p->straddled, p->nstraddled, h);
}

bool rollup_plan_uncovered(const struct rollup_plan *p, int64_t d) {
  return sorted_has(p->uncovered, p->nuncovered, d);
}

bool rollup_plan_split(const struct rollup_plan *p, int64_t d) {
  return sorted_has(p->split, p->nsplit, d);
}

bool rollup_plan_split4(const struct rollup_plan *p, int64_t b) {
  return sorted_has(p->split4, p->nsplit4, b);
}

bool rollup_plan_bad(const struct rollup_plan *p, int64_t b) {
  return sorted_has(p->bad, p->nbad, b);
}

_Static_assert(offsetof(struct store_cell, has_hist) < offsetof(struct store_cell, hist),
               "rollup_cell_init clears has_hist");

void rollup_cell_init(struct store_cell *c, enum store_cell_kind kind, int64_t at_us) {
  memset(c, 0, offsetof(struct store_cell, hist));
  c->kind = kind;
  c->at_us = at_us;
}

bool rollup_keeps_hist(enum rollup_level level, int dim) {
  return level == ROLLUP_FULL || level == ROLLUP_BLOCK ||
         (level == ROLLUP_DIM &&
          (dim == STORE_DIM_STATUS || dim == ROLLUP_DIM_BLOCK + STORE_DIM_STATUS));
}

enum store_status rollup_rebuild_wait(struct store *s, int64_t *counted) {
  struct store_write w;
  memset(&w, 0, sizeof w);
  w.kind = STORE_WRITE_ANALYTICS_REBUILD;
  w.audio_fd = -1;
  store_submit_wait(s, &w);
  *counted = w.status == STORE_OK ? w.erased : 0;
  return w.status;
}

bool rollup_query_filtered(const struct store_analytics_query *q) {
  return q->account_id || q->agent_id || q->platform || q->status || q->naccounts;
}

bool rollup_source_filtered(enum rollup_source src) {
  return src == ROLLUP_SRC_RAW || src == ROLLUP_SRC_FULL || src == ROLLUP_SRC_FULL_TOTAL ||
         src == ROLLUP_SRC_FULL_BLOCK || src == ROLLUP_SRC_DIM_VALUE;
}

int rollup_query_one_dim(const struct store_analytics_query *q) {
  int dim = -1, n = 0;
  if (q->account_id || q->naccounts) dim = STORE_DIM_ACCOUNT, n++;
  if (q->agent_id) dim = STORE_DIM_AGENT, n++;
  if (q->platform) dim = STORE_DIM_PLATFORM, n++;
  if (q->status) dim = STORE_DIM_STATUS, n++;
  return n == 1 ? dim : -1;
}

/* Whether day d lies in a good block (one of [block_from, block_to) without an uncovered day). */
static bool in_good_block(const struct rollup_plan *p, int64_t d) {
  return d >= p->block_from && d < p->block_to &&
         !rollup_plan_bad(p, rollup_floor(d, ROLLUP_BLOCK_US));
}

void rollup_cell_hist(struct store_cell *c, const void *blob, size_t len) {
  if (len != ROLLUP_HIST_BYTES || !blob) return;
  const unsigned char *p = blob;
  c->has_hist = true;
  for (int b = 0; b < ANALYTICS_HIST_BUCKETS; b++)
    c->hist[b] = (uint32_t)p[4 * b] | (uint32_t)p[4 * b + 1] << 8 | (uint32_t)p[4 * b + 2] << 16 |
                 (uint32_t)p[4 * b + 3] << 24;
}

void rollup_sink_cell(struct rollup_sink *k, const struct store_cell *c) {
  if (c->conversations == 0) return;
  switch (k->src) {
    case ROLLUP_SRC_FULL:
      if (rollup_plan_straddled(k->plan, c->at_us)) return;
      break;
    case ROLLUP_SRC_TOTAL: /* only the hours of split 4-hour spans */
      if (!rollup_plan_split4(k->plan, rollup_floor(c->at_us, ROLLUP_TOTAL4_US))) return;
      break;
    case ROLLUP_SRC_TOTAL4: /* the 4-hour spans of split days, but split ones */
      if (!rollup_plan_split(k->plan, rollup_floor(c->at_us, ROLLUP_DAY_US)) ||
          rollup_plan_split4(k->plan, c->at_us))
        return;
      break;
    case ROLLUP_SRC_DAY_TOTAL:
      if (rollup_plan_uncovered(k->plan, c->at_us) || rollup_plan_split(k->plan, c->at_us)) return;
      break;
    case ROLLUP_SRC_DIM: /* days outside the good blocks */
      if (rollup_plan_uncovered(k->plan, c->at_us)) return;
      if (c->at_us >= k->plan->block_from && c->at_us < k->plan->block_to &&
          !rollup_plan_bad(k->plan, rollup_floor(c->at_us, ROLLUP_BLOCK_US)))
        return;
      break;
    case ROLLUP_SRC_BLOCK:
      if (rollup_plan_bad(k->plan, c->at_us)) return;
      break;
    case ROLLUP_SRC_FULL_TOTAL: { /* the hours of split days of the good blocks */
      int64_t d = rollup_floor(c->at_us, ROLLUP_DAY_US);
      if (!in_good_block(k->plan, d) || !rollup_plan_split(k->plan, d) ||
          rollup_plan_straddled(k->plan, c->at_us))
        return;
      struct store_cell t;
      rollup_cell_init(&t, STORE_CELL_TOTAL, c->at_us);
      t.conversations = c->conversations;
      t.messages = c->messages;
      t.duration_sum = c->duration_sum;
      k->cell(k->cls, &t);
      return;
    }
    case ROLLUP_SRC_DIM_VALUE: /* the other days of the good blocks */
      if (!in_good_block(k->plan, c->at_us) || rollup_plan_split(k->plan, c->at_us) ||
          rollup_plan_uncovered(k->plan, c->at_us))
        return;
      break;
    case ROLLUP_SRC_FULL_BLOCK: { /* the good blocks, one DIM cell per dimension */
      if (!in_good_block(k->plan, c->at_us)) return;
      struct store_cell t;
      for (int d = 0; d < STORE_DIM_COUNT; d++) {
        rollup_cell_init(&t, STORE_CELL_DIM, c->at_us);
        t.dim = (enum store_dim)d;
        t.value[d] = c->value[d];
        t.conversations = c->conversations;
        t.messages = c->messages;
        t.duration_sum = c->duration_sum;
        if (d == STORE_DIM_STATUS && c->has_hist) {
          t.has_hist = true;
          memcpy(t.hist, c->hist, sizeof t.hist);
        }
        k->cell(k->cls, &t);
      }
      return;
    }
    case ROLLUP_SRC_RAW:
    case ROLLUP_SRC_COUNT:
      break;
  }
  k->cell(k->cls, c);
}

void rollup_cell_raw(struct store_cell *c, int64_t event_us,
                     const char *const dims[STORE_DIM_COUNT], int64_t duration, int64_t messages) {
  rollup_cell_init(c, STORE_CELL_FULL, event_us);
  for (int d = 0; d < STORE_DIM_COUNT; d++) c->value[d] = dims[d];
  c->conversations = 1;
  c->messages = messages;
  c->duration_sum = duration;
  c->has_hist = true;
  memset(c->hist, 0, sizeof c->hist);
  c->hist[analytics_hist_bucket(duration)] = 1;
}

void rollup_cell_single(struct store_cell *c) {
  if (c->conversations != 1) return;
  c->has_hist = true;
  memset(c->hist, 0, sizeof c->hist);
  c->hist[analytics_hist_bucket(c->duration_sum)] = 1;
}

const char *rollup_value(const char *stored) { return stored && *stored ? stored : NULL; }

/* A list of ranges for one read. */
struct ranges {
  int64_t (*r)[2];
  size_t n, cap;
  bool oom;
};

static void ranges_add(struct ranges *l, int64_t a, int64_t b) {
  if (a >= b || l->oom) return;
  if (l->n && l->r[l->n - 1][1] == a) {
    l->r[l->n - 1][1] = b;
    return;
  }
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 16;
    int64_t(*r)[2] = realloc(l->r, cap * sizeof *r);
    if (!r) {
      l->oom = true;
      return;
    }
    l->r = r;
    l->cap = cap;
  }
  l->r[l->n][0] = a;
  l->r[l->n][1] = b;
  l->n++;
}

/* [a, b) less the units of u1 starting at a value of the ascending s1 and those of u2 starting at
 * a value of the ascending s2 (they may overlap: a day of s2 inside a unit of s1), in time
 * proportional to the ranges and the values, not to (b - a). s2 may be empty (NULL, 0). */
static void ranges_add_except(struct ranges *l, int64_t a, int64_t b, const int64_t *s1, size_t n1,
                              int64_t u1, const int64_t *s2, size_t n2, int64_t u2) {
  size_t i = 0, j = 0;
  while (a < b) {
    while (i < n1 && s1[i] + u1 <= a) i++;
    while (j < n2 && s2[j] + u2 <= a) j++;
    if (i < n1 && s1[i] <= a) { /* a lies in a unit left out */
      a = s1[i] + u1;
      continue;
    }
    if (j < n2 && s2[j] <= a) {
      a = s2[j] + u2;
      continue;
    }
    int64_t next = b;
    if (i < n1 && s1[i] < next) next = s1[i];
    if (j < n2 && s2[j] < next) next = s2[j];
    ranges_add(l, a, next);
    a = next;
  }
}

static enum store_status read_ranges(rollup_read_fn read, void *read_cls, struct rollup_sink *k,
                                     enum rollup_source src, struct ranges *l) {
  enum store_status st = l->oom ? STORE_RETRY : STORE_OK;
  k->src = src;
  if (st == STORE_OK && l->n) st = read(read_cls, k, (const int64_t(*)[2])l->r, l->n);
  l->n = 0;
  return st;
}

static bool empty(const char *s) { return s && !*s; }

enum store_status rollup_scan(const struct store_analytics_query *q, rollup_read_fn read,
                              void *read_cls, store_cell_cb cell, void *cls) {
  /* An empty filter value matches nothing (store.h): the rollups keep "not known" as '', which
   * it would match there while the conversations read at edges (NULL) would not. */
  if (empty(q->account_id) || empty(q->agent_id) || empty(q->platform) || empty(q->status))
    return STORE_OK;
  struct rollup_plan p;
  if (!rollup_plan_make(q, &p)) return STORE_RETRY;
  struct rollup_sink k = {&p, ROLLUP_SRC_RAW, cell, cls};
  struct ranges l = {0};
  for (size_t i = 0; i < p.nraw; i++) ranges_add(&l, p.raw[i][0], p.raw[i][1]);
  enum store_status st = read_ranges(read, read_cls, &k, ROLLUP_SRC_RAW, &l);
  if (st == STORE_OK && p.hour_from < p.hour_to) {
    if (rollup_query_one_dim(q) >= 0 && p.day_from < p.day_to && p.block_from < p.block_to) {
      /* one dimension over whole blocks: analytics_hour outside the good blocks (every
       * uncovered day lies in a bad block or outside [block_from, block_to)) */
      ranges_add(&l, p.hour_from, p.block_from);
      for (size_t i = 0; i < p.nbad; i++) ranges_add(&l, p.bad[i], p.bad[i] + ROLLUP_BLOCK_US);
      ranges_add(&l, p.block_to, p.hour_to);
      st = read_ranges(read, read_cls, &k, ROLLUP_SRC_FULL, &l);
      /* the good blocks' totals and series: a split day's hours, another day's row (walking the
       * split days and bad blocks, not every day: a range of centuries is millions of days) */
      for (size_t i = 0; i < p.nsplit; i++)
        if (in_good_block(&p, p.split[i])) ranges_add(&l, p.split[i], p.split[i] + ROLLUP_DAY_US);
      if (st == STORE_OK) st = read_ranges(read, read_cls, &k, ROLLUP_SRC_FULL_TOTAL, &l);
      ranges_add_except(&l, p.block_from, p.block_to, p.bad, p.nbad, ROLLUP_BLOCK_US, p.split,
                        p.nsplit, ROLLUP_DAY_US);
      if (st == STORE_OK) st = read_ranges(read, read_cls, &k, ROLLUP_SRC_DIM_VALUE, &l);
      /* their breakdowns and percentiles */
      ranges_add_except(&l, p.block_from, p.block_to, p.bad, p.nbad, ROLLUP_BLOCK_US, NULL, 0, 0);
      if (st == STORE_OK) st = read_ranges(read, read_cls, &k, ROLLUP_SRC_FULL_BLOCK, &l);
    } else if (rollup_query_filtered(q) || p.day_from == p.day_to) {
      ranges_add(&l, p.hour_from, p.hour_to);
      st = read_ranges(read, read_cls, &k, ROLLUP_SRC_FULL, &l);
    } else {
      ranges_add(&l, p.hour_from, p.day_from);
      for (size_t i = 0; i < p.nuncovered; i++)
        ranges_add(&l, p.uncovered[i], p.uncovered[i] + ROLLUP_DAY_US);
      ranges_add(&l, p.day_to, p.hour_to);
      st = read_ranges(read, read_cls, &k, ROLLUP_SRC_FULL, &l);
      /* totals and series: a day's row; in a day a cut falls inside, its 4-hour rows, and the
       * hours of a 4-hour span a cut falls inside (only the rows the sink keeps are read: an
       * hourly series reads no day or 4-hour row) */
      ranges_add_except(&l, p.day_from, p.day_to, p.uncovered, p.nuncovered, ROLLUP_DAY_US, p.split,
                        p.nsplit, ROLLUP_DAY_US);
      if (st == STORE_OK) st = read_ranges(read, read_cls, &k, ROLLUP_SRC_DAY_TOTAL, &l);
      for (size_t i = 0; i < p.nsplit; i++)
        for (int64_t b = p.split[i]; b < p.split[i] + ROLLUP_DAY_US; b += ROLLUP_TOTAL4_US)
          if (!rollup_plan_split4(&p, b)) ranges_add(&l, b, b + ROLLUP_TOTAL4_US);
      if (st == STORE_OK) st = read_ranges(read, read_cls, &k, ROLLUP_SRC_TOTAL4, &l);
      for (size_t i = 0; i < p.nsplit4; i++)
        ranges_add(&l, p.split4[i], p.split4[i] + ROLLUP_TOTAL4_US);
      if (st == STORE_OK) st = read_ranges(read, read_cls, &k, ROLLUP_SRC_TOTAL, &l);
      /* breakdowns: blocks, and days where there is none */
      if (p.block_from == p.block_to) {
        ranges_add(&l, p.day_from, p.day_to);
      } else {
        ranges_add(&l, p.day_from, p.block_from);
        for (size_t i = 0; i < p.nbad; i++) ranges_add(&l, p.bad[i], p.bad[i] + ROLLUP_BLOCK_US);
        ranges_add(&l, p.block_to, p.day_to);
      }
      if (st == STORE_OK) st = read_ranges(read, read_cls, &k, ROLLUP_SRC_DIM, &l);
      ranges_add(&l, p.block_from, p.block_to);
      if (st == STORE_OK) st = read_ranges(read, read_cls, &k, ROLLUP_SRC_BLOCK, &l);
    }
  }
  free(l.r);
  rollup_plan_free(&p);
  return st;
}
