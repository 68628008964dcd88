/* Analytics rollups (issue 11 part 1), what both backends share: the levels kept, the time
 * buckets, the hist's stored form, a batch's contributions summed in memory (so each rollup key is
 * written once per commit), and how a scan splits [from, to) between rollup rows and
 * conversations read one by one.
 *
 * Levels (NULL dimensions stored as "", which no stored value can be):
 *   ROLLUP_FULL  analytics_hour:  UTC hour x account x agent x platform x status x outcome
 *   ROLLUP_TOTAL analytics_total: UTC hour, no dimension (an unfiltered query's totals and series)
 *   ROLLUP_DIM   analytics_dim, by its dim column: 0..4 (enum store_dim) a UTC day x one
 *                dimension (breakdowns); ROLLUP_DIM_TOTAL a UTC day, no dimension (value "":
 *                totals and series of days no cut falls inside); ROLLUP_DIM_TOTAL4 the same for 4
 *                UTC hours (days a cut falls inside); ROLLUP_DIM_BLOCK + d a block of
 *                ROLLUP_BLOCK_US (16 UTC days from the epoch) x dimension d (breakdowns of long
 *                ranges).
 *   ROLLUP_BLOCK analytics_block: a block of ROLLUP_BLOCK_US x account x agent x platform x
 *                status x outcome (the breakdowns and percentiles of a query filtered on one
 *                dimension, over long ranges).
 * A duration histogram is stored only where a scan reads one (rollup_keeps_hist): FULL and BLOCK
 * rows (filtered scans, and unfiltered ones at their edges) and the status rows of ROLLUP_DIM (day
 * and block): the status breakdown of an unfiltered scan counts every conversation once, so its
 * hists give the totals' percentiles. The other rows keep an empty one (7.5 KiB less to read per
 * day of an unfiltered hourly series on SQLite, 15.5 KiB on PostgreSQL, and no histogram to add up
 * in 11 of the 15 keys a write adds to).
 *
 * A scan reads a bucket from a rollup only when the bucket lies wholly inside [from, to) and (hour
 * levels) no cut falls inside it; the rest of [from, to) is read conversation by conversation on
 * the event-time index. A query filtered on two dimensions or more reads whole hours from
 * analytics_hour. One filtered on one dimension (rollup_query_one_dim) over at least one whole
 * block reads, for the blocks without a straddled hour ("good"), its totals and series from that
 * dimension's value in analytics_dim (a day's row; the hours of analytics_hour in days a cut falls
 * inside) and its breakdowns and percentiles from analytics_block; the rest of the whole hours from
 * analytics_hour. */
#ifndef GSR_STORE_ROLLUP_H
#define GSR_STORE_ROLLUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/analytics_hist.h"
#include "store/store.h"

#define ROLLUP_HOUR_US INT64_C(3600000000)
#define ROLLUP_DAY_US (24 * ROLLUP_HOUR_US)
#define ROLLUP_BLOCK_US (16 * ROLLUP_DAY_US)
#define ROLLUP_TOTAL4_US (4 * ROLLUP_HOUR_US)
#define ROLLUP_DIM_TOTAL 5
#define ROLLUP_DIM_TOTAL4 6
#define ROLLUP_DIM_BLOCK 8
#define ROLLUP_HIST_BYTES (4 * ANALYTICS_HIST_BUCKETS) /* little-endian uint32 each */

enum rollup_level { ROLLUP_FULL, ROLLUP_TOTAL, ROLLUP_DIM, ROLLUP_BLOCK };
#define ROLLUP_LEVELS 4

/* floor(t / unit) * unit, for negative t too. */
int64_t rollup_floor(int64_t t, int64_t unit);

/* One stored conversation as the rollups count it. Strings NULL: unknown. */
struct rollup_row {
  int64_t event_us; /* start time, else processed time */
  const char *dims[STORE_DIM_COUNT];
  int64_t duration, messages;
};

/* Keys a row adds to: FULL, BLOCK, TOTAL, day total, 4-hour total, and per dimension a day and
 * a block. */
#define ROLLUP_KEYS_PER_ROW (5 + 2 * STORE_DIM_COUNT)

/* A key's summed contributions. */
struct rollup_entry {
  enum rollup_level level;
  int dim;                     /* ROLLUP_DIM: enum store_dim */
  int64_t at_us;               /* the bucket's start */
  char *vals[STORE_DIM_COUNT]; /* ROLLUP_FULL, BLOCK: all five; ROLLUP_DIM: vals[0]; "": NULL */
  int64_t conversations, messages, duration_sum;
  int64_t hist[ANALYTICS_HIST_BUCKETS];
  /* private */
  uint64_t hash;
  size_t next;
};

/* The contributions of one batch: a hash map of entries. */
struct rollup_map {
  struct rollup_entry *e;
  size_t n, cap;
  size_t *slots; /* heads of chains, SIZE_MAX: empty */
  size_t nslots;
  bool oom;    /* an add failed: the batch must fail */
  bool levels; /* also the coarse levels (TOTAL, DIM, BLOCK) besides FULL */
  /* The keys of the last row added (a batch's rows often share them all): its hour and its
   * entries, FULL first. */
  bool last_valid;
  int64_t last_hour;
  size_t last[ROLLUP_KEYS_PER_ROW];
  size_t nlast;
};

void rollup_map_init(struct rollup_map *m, bool coarse_levels);
/* Forgets every entry (a batch begins, or was rolled back). */
void rollup_map_clear(struct rollup_map *m);
void rollup_map_free(struct rollup_map *m);
/* Adds sign (+1 or -1) times row to every level's key. False when out of memory (m->oom). */
bool rollup_map_add(struct rollup_map *m, int sign, const struct rollup_row *row);
/* The entry of a key (vals: ROLLUP_FULL and BLOCK five, ROLLUP_DIM one, "" for NULL); NULL:
 * none. */
struct rollup_entry *rollup_map_find(struct rollup_map *m, enum rollup_level level, int dim,
                                     int64_t at_us, const char *const *vals);
/* Whether an entry changes nothing. */
bool rollup_entry_zero(const struct rollup_entry *e);
/* Whether rows of this level and dim (ROLLUP_DIM: the dim column) store a histogram. */
bool rollup_keeps_hist(enum rollup_level level, int dim);

void rollup_hist_encode(const int64_t hist[ANALYTICS_HIST_BUCKETS],
                        unsigned char out[ROLLUP_HIST_BYTES]);
/* Adds the stored hist (len bytes; anything but ROLLUP_HIST_BYTES adds nothing) into hist. */
void rollup_hist_add_blob(int64_t hist[ANALYTICS_HIST_BUCKETS], const void *blob, size_t len);

/* How a scan reads [from, to) (see the top): whole hours clear of cuts from the hour levels, the
 * rest conversation by conversation. */
struct rollup_plan {
  /* hour buckets [hour_from, hour_to) (empty when equal), but the straddled ones */
  int64_t hour_from, hour_to;
  int64_t *straddled; /* hour bucket starts a cut falls strictly inside, ascending */
  size_t nstraddled;
  /* ranges read conversation by conversation, ascending, disjoint */
  int64_t (*raw)[2];
  size_t nraw;
  /* UTC days wholly inside [hour_from, hour_to) (empty when equal). An unfiltered scan reads
   * those of them without a straddled hour from analytics_total (totals, series) and
   * analytics_dim (breakdowns: a breakdown is over [from, to), so a cut inside a day does not
   * matter to it), the other hours from analytics_hour. */
  int64_t day_from, day_to;
  int64_t *uncovered; /* days of [day_from, day_to) holding a straddled hour, ascending */
  size_t nuncovered;
  /* covered days (not uncovered) a cut falls strictly inside, ascending: their totals come from
   * analytics_total (hours), the other covered days' from their ROLLUP_DIM_TOTAL row */
  int64_t *split;
  size_t nsplit;
  int64_t *split4; /* 4-hour spans of split days a cut falls strictly inside: read by the hour */
  size_t nsplit4;
  /* blocks wholly inside [day_from, day_to) (empty when equal); those holding an uncovered day
   * ("bad", ascending) are read day by day */
  int64_t block_from, block_to;
  int64_t *bad;
  size_t nbad;
};

bool rollup_plan_make(const struct store_analytics_query *q, struct rollup_plan *p);
void rollup_plan_free(struct rollup_plan *p);
/* Whether hour bucket h is straddled by a cut / day d holds a straddled hour. */
bool rollup_plan_straddled(const struct rollup_plan *p, int64_t h);
bool rollup_plan_uncovered(const struct rollup_plan *p, int64_t d);
bool rollup_plan_split(const struct rollup_plan *p, int64_t d);
bool rollup_plan_split4(const struct rollup_plan *p, int64_t b);
bool rollup_plan_bad(const struct rollup_plan *p, int64_t b);

/* An empty cell of kind at at_us, no histogram (its hist not even zeroed). */
void rollup_cell_init(struct store_cell *c, enum store_cell_kind kind, int64_t at_us);

/* c's histogram from a stored one (len bytes; anything but ROLLUP_HIST_BYTES: none, has_hist
 * stays false). */
void rollup_cell_hist(struct store_cell *c, const void *blob, size_t len);

/* A scan: rollup_scan asks the backend, through read, for the rows of one source in [from, to)
 * (RAW: conversations by event time; FULL, TOTAL, FULL_TOTAL: hour buckets; DIM, DIM_VALUE:
 * day buckets; BLOCK, FULL_BLOCK: blocks), each handed
 * to rollup_sink_cell, which keeps the ones the plan takes from that source; ranges[0..n) are
 * ascending and disjoint, each [from, to). The caller holds one read snapshot around the whole
 * scan. */
enum rollup_source {
  ROLLUP_SRC_RAW,       /* conversations: FULL cells of one */
  ROLLUP_SRC_FULL,      /* analytics_hour: FULL cells */
  ROLLUP_SRC_TOTAL,     /* analytics_total: TOTAL cells of an hour */
  ROLLUP_SRC_DAY_TOTAL, /* analytics_dim dim ROLLUP_DIM_TOTAL: TOTAL cells of a day */
  ROLLUP_SRC_TOTAL4,    /* analytics_dim dim ROLLUP_DIM_TOTAL4: TOTAL cells of 4 hours */
  ROLLUP_SRC_DIM,       /* analytics_dim dims 0..4: DIM cells of a day */
  ROLLUP_SRC_BLOCK,     /* analytics_dim dims ROLLUP_DIM_BLOCK + 0..4: DIM cells of a block */
  /* Filtered on one dimension d (rollup_query_one_dim), the filter applied by the backend. */
  /* analytics_hour: FULL cells, which rollup_sink_cell hands on as TOTAL cells of an hour */
  ROLLUP_SRC_FULL_TOTAL,
  ROLLUP_SRC_DIM_VALUE, /* analytics_dim dim d, the filter on its value: TOTAL cells of a day */
  /* analytics_block: FULL cells of a block, which rollup_sink_cell hands on as one DIM cell per
   * dimension (only the status one with the hist) */
  ROLLUP_SRC_FULL_BLOCK,
  ROLLUP_SRC_COUNT
};
struct rollup_sink {
  const struct rollup_plan *plan;
  enum rollup_source src;
  store_cell_cb cell;
  void *cls;
};
typedef enum store_status (*rollup_read_fn)(void *cls, struct rollup_sink *sink,
                                            const int64_t (*ranges)[2], size_t n);
void rollup_sink_cell(struct rollup_sink *k, const struct store_cell *c);
enum store_status rollup_scan(const struct store_analytics_query *q, rollup_read_fn read,
                              void *read_cls, store_cell_cb cell, void *cls);
/* A FULL cell of one conversation (c->conversations 1) read without its hist: its hist is one
 * count in the bucket of its duration, c->duration_sum. Any other count: no hist. */
void rollup_cell_single(struct store_cell *c);
/* A conversation read one by one, as a FULL cell of its own. */
void rollup_cell_raw(struct store_cell *c, int64_t event_us,
                     const char *const dims[STORE_DIM_COUNT], int64_t duration, int64_t messages);
/* A rollup's stored dimension value as a cell shows it ("": NULL). */
const char *rollup_value(const char *stored);

/* ops->analytics_rebuild of both backends: a STORE_WRITE_ANALYTICS_REBUILD through the writer,
 * waited for. */
enum store_status rollup_rebuild_wait(struct store *s, int64_t *counted);

/* Whether a source's statement takes the scan's filters (the conversations, and the rollups with
 * every dimension or the filtered value: FULL, FULL_TOTAL, FULL_BLOCK, DIM_VALUE). */
bool rollup_source_filtered(enum rollup_source src);
/* Whether q filters on any dimension (then the rollups with every dimension answer it). */
bool rollup_query_filtered(const struct store_analytics_query *q);
/* The one dimension q filters on (STORE_DIM_ACCOUNT: account_id and/or a key's accounts), else
 * -1 (no filter, or filters on two dimensions or more). */
int rollup_query_one_dim(const struct store_analytics_query *q);

#endif
