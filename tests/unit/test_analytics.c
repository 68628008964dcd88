/* Unit tests for model/analytics: the series' cuts in a time zone (UTC, America/New_York across
 * both daylight saving changes, a 30-minute zone, a zone whose daylight saving moves by 30
 * minutes, ISO weeks), the points cap, cells accumulated into totals, breakdowns (top 20, ties,
 * unknown values, "other") and the series, percentiles and averages, accounts named through the
 * store, and the JSON byte for byte. Every expected number is worked out by hand in the comments.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"
#include "model/analytics.h"

static int64_t at(const char *rfc3339) {
  int64_t us;
  assert_true(time_parse_rfc3339(rfc3339, strlen(rfc3339), &us));
  return us;
}

static struct tz *zone(const char *name) {
  struct tz *z = tz_load(name);
  assert_non_null(z);
  return z;
}

/* The answer rendered and parsed back. */
static json_t *render(struct analytics *a, const char *tz_name) {
  char *text;
  size_t len;
  assert_int_equal(analytics_render(a, tz_name, NULL, NULL, &text, &len), 0);
  assert_int_equal(strlen(text), len);
  json_error_t err;
  json_t *j = json_loads(text, 0, &err);
  assert_non_null(j);
  free(text);
  return j;
}

static void assert_starts(json_t *answer, const char *const *starts, size_t n) {
  json_t *series = json_object_get(answer, "series");
  assert_int_equal(json_array_size(series), n);
  for (size_t i = 0; i < n; i++)
    assert_string_equal(json_string_value(json_object_get(json_array_get(series, i), "start")),
                        starts[i]);
}

static void assert_cuts(struct analytics *a, const char *const *cuts, size_t n) {
  size_t got;
  const int64_t *c = analytics_cuts(a, &got);
  assert_int_equal(got, n);
  for (size_t i = 0; i < n; i++) assert_int_equal(c[i], at(cuts[i]));
  assert_int_equal(analytics_points(a), n + 1);
}

/* A FULL cell of one conversation (or n alike). */
static struct analytics_cell full(const char *when, const char *account, const char *agent,
                                  const char *platform, const char *status, const char *outcome,
                                  int64_t n, int64_t messages, int64_t duration_sum,
                                  uint32_t *hist) {
  struct analytics_cell c = {.kind = ANALYTICS_CELL_FULL,
                             .at_us = at(when),
                             .conversations = n,
                             .messages = messages,
                             .duration_sum = duration_sum,
                             .hist = hist};
  c.value[ANALYTICS_DIM_ACCOUNT] = account;
  c.value[ANALYTICS_DIM_AGENT] = agent;
  c.value[ANALYTICS_DIM_PLATFORM] = platform;
  c.value[ANALYTICS_DIM_STATUS] = status;
  c.value[ANALYTICS_DIM_OUTCOME] = outcome;
  return c;
}

static int64_t num(json_t *obj, const char *path) {
  /* "a.b": nested objects */
  char buf[64];
  snprintf(buf, sizeof buf, "%s", path);
  json_t *cur = obj;
  for (char *save, *part = strtok_r(buf, ".", &save); part; part = strtok_r(NULL, ".", &save))
    cur = json_object_get(cur, part);
  assert_true(json_is_integer(cur));
  return json_integer_value(cur);
}

/* ---- cuts ---- */

static void test_utc_days(void **state) {
  (void)state;
  struct tz *z = zone("UTC");
  struct analytics *a;
  /* [03-01 00:00, 03-04 00:00): cuts at 03-02 and 03-03, three days */
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-03-01T00:00:00Z"), at("2026-03-04T00:00:00Z"), 100, &a),
      ANALYTICS_OK);
  const char *cuts[] = {"2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z"};
  assert_cuts(a, cuts, 2);
  json_t *j = render(a, "UTC");
  const char *starts[] = {"2026-03-01T00:00:00+00:00", "2026-03-02T00:00:00+00:00",
                          "2026-03-03T00:00:00+00:00"};
  assert_starts(j, starts, 3);
  json_decref(j);
  analytics_free(a);
  /* from inside a day, to one microsecond past midnight: the first and last days are partial
   * but listed from their start; to exactly at a cut makes no empty point after it */
  assert_int_equal(analytics_new(z, TZ_DAY, at("2026-03-01T10:20:30.5Z"),
                                 at("2026-03-03T00:00:00.000001Z"), 100, &a),
                   ANALYTICS_OK);
  assert_cuts(a, cuts, 2);
  analytics_free(a);
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-03-01T10:20:30.5Z"), at("2026-03-03T00:00:00Z"), 100, &a),
      ANALYTICS_OK);
  assert_cuts(a, cuts, 1);
  analytics_free(a);
  /* within one interval: no cut, one point */
  assert_int_equal(
      analytics_new(z, TZ_HOUR, at("2026-03-01T10:20:00Z"), at("2026-03-01T10:40:00Z"), 100, &a),
      ANALYTICS_OK);
  assert_cuts(a, NULL, 0);
  j = render(a, "UTC");
  const char *one[] = {"2026-03-01T10:00:00+00:00"};
  assert_starts(j, one, 1);
  json_decref(j);
  analytics_free(a);
  tz_free(z);
}

static void test_new_york_spring_forward_day_is_23_hours(void **state) {
  (void)state;
  struct tz *z = zone("America/New_York");
  struct analytics *a;
  /* 2026-03-08 (second Sunday of March): local midnight 03-07 is 05:00Z (EST), 03-08 is 05:00Z
   * (still EST), 03-09 is 04:00Z (EDT): the day of 03-08 lasts 23 hours */
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-03-07T05:00:00Z"), at("2026-03-10T04:00:00Z"), 100, &a),
      ANALYTICS_OK);
  const char *cuts[] = {"2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z"};
  assert_cuts(a, cuts, 2);
  /* 23:30 local on 03-08 (03:30Z on 03-09) is still the 8th; 00:30 local on the 9th is not */
  struct analytics_cell c1 =
      full("2026-03-09T03:30:00Z", "acc", "ag", "web", "completed", NULL, 1, 4, 60, NULL);
  struct analytics_cell c2 =
      full("2026-03-09T04:30:00Z", "acc", "ag", "web", "completed", NULL, 1, 6, 30, NULL);
  assert_true(analytics_add(a, &c1));
  assert_true(analytics_add(a, &c2));
  json_t *j = render(a, "America/New_York");
  const char *starts[] = {"2026-03-07T00:00:00-05:00", "2026-03-08T00:00:00-05:00",
                          "2026-03-09T00:00:00-04:00"};
  assert_starts(j, starts, 3);
  json_t *series = json_object_get(j, "series");
  assert_int_equal(num(json_array_get(series, 0), "conversations"), 0);
  assert_int_equal(num(json_array_get(series, 1), "conversations"), 1);
  assert_int_equal(num(json_array_get(series, 1), "messages"), 4);
  assert_int_equal(num(json_array_get(series, 2), "conversations"), 1);
  assert_int_equal(num(json_array_get(series, 2), "durationSeconds.sum"), 30);
  json_decref(j);
  analytics_free(a);
  tz_free(z);
}

static void test_new_york_fall_back_hours_and_day(void **state) {
  (void)state;
  struct tz *z = zone("America/New_York");
  struct analytics *a;
  /* 2026-11-01 (first Sunday of November): 01:00-02:00 local happens twice, EDT (05:00Z) then
   * EST (06:00Z); 00:00-03:00 local is four hours */
  assert_int_equal(
      analytics_new(z, TZ_HOUR, at("2026-11-01T04:00:00Z"), at("2026-11-01T08:00:00Z"), 100, &a),
      ANALYTICS_OK);
  const char *cuts[] = {"2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"};
  assert_cuts(a, cuts, 3);
  json_t *j = render(a, "America/New_York");
  const char *starts[] = {"2026-11-01T00:00:00-04:00", "2026-11-01T01:00:00-04:00",
                          "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"};
  assert_starts(j, starts, 4);
  json_decref(j);
  analytics_free(a);
  /* the day of 11-01 lasts 25 hours: 04:00Z to 05:00Z the next day */
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-11-01T04:00:00Z"), at("2026-11-03T05:00:00Z"), 100, &a),
      ANALYTICS_OK);
  const char *day_cuts[] = {"2026-11-02T05:00:00Z"};
  assert_cuts(a, day_cuts, 1);
  j = render(a, "America/New_York");
  const char *day_starts[] = {"2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00"};
  assert_starts(j, day_starts, 2);
  json_decref(j);
  analytics_free(a);
  tz_free(z);
}

static void test_thirty_minute_zones(void **state) {
  (void)state;
  struct tz *z = zone("Asia/Kolkata"); /* +05:30, no daylight saving */
  struct analytics *a;
  /* local hours start at :30 UTC: 00:00Z is 05:30 local, in the hour from 23:30Z */
  assert_int_equal(
      analytics_new(z, TZ_HOUR, at("2026-01-01T00:00:00Z"), at("2026-01-01T02:00:00Z"), 100, &a),
      ANALYTICS_OK);
  const char *cuts[] = {"2026-01-01T00:30:00Z", "2026-01-01T01:30:00Z"};
  assert_cuts(a, cuts, 2);
  json_t *j = render(a, "Asia/Kolkata");
  const char *starts[] = {"2026-01-01T05:00:00+05:30", "2026-01-01T06:00:00+05:30",
                          "2026-01-01T07:00:00+05:30"};
  assert_starts(j, starts, 3);
  json_decref(j);
  analytics_free(a);
  /* local days start at 18:30Z the day before */
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-01-01T00:00:00Z"), at("2026-01-03T00:00:00Z"), 100, &a),
      ANALYTICS_OK);
  const char *day_cuts[] = {"2026-01-01T18:30:00Z", "2026-01-02T18:30:00Z"};
  assert_cuts(a, day_cuts, 2);
  struct analytics_cell c =
      full("2026-01-01T18:29:59Z", NULL, NULL, NULL, "completed", NULL, 2, 2, 2, NULL);
  assert_true(analytics_add(a, &c)); /* 23:59:59 local on the 1st */
  j = render(a, "Asia/Kolkata");
  const char *day_starts[] = {"2026-01-01T00:00:00+05:30", "2026-01-02T00:00:00+05:30",
                              "2026-01-03T00:00:00+05:30"};
  assert_starts(j, day_starts, 3);
  assert_int_equal(num(json_array_get(json_object_get(j, "series"), 0), "conversations"), 2);
  json_decref(j);
  analytics_free(a);
  tz_free(z);

  /* Lord Howe Island: +11:00 in summer, +10:30 in winter; on 2026-04-05 02:00 local goes back
   * to 01:30, so that day lasts 24.5 hours: 04-04T13:00Z to 04-05T13:30Z */
  z = zone("Australia/Lord_Howe");
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-04-04T13:00:00Z"), at("2026-04-06T13:30:00Z"), 100, &a),
      ANALYTICS_OK);
  const char *lh_cuts[] = {"2026-04-05T13:30:00Z"};
  assert_cuts(a, lh_cuts, 1);
  j = render(a, "Australia/Lord_Howe");
  const char *lh_starts[] = {"2026-04-05T00:00:00+11:00", "2026-04-06T00:00:00+10:30"};
  assert_starts(j, lh_starts, 2);
  json_decref(j);
  analytics_free(a);
  tz_free(z);
}

static void test_berlin_week_across_dst(void **state) {
  (void)state;
  struct tz *z = zone("Europe/Berlin");
  struct analytics *a;
  /* ISO weeks start on Monday: Mon 03-23 00:00 CET is 03-22T23:00Z; Mon 03-30 00:00 CEST is
   * 03-29T22:00Z (the week of the change lasts 167 hours). from on Wednesday 03-25. */
  assert_int_equal(
      analytics_new(z, TZ_WEEK, at("2026-03-25T12:00:00Z"), at("2026-04-02T00:00:00Z"), 100, &a),
      ANALYTICS_OK);
  const char *cuts[] = {"2026-03-29T22:00:00Z"};
  assert_cuts(a, cuts, 1);
  json_t *j = render(a, "Europe/Berlin");
  const char *starts[] = {"2026-03-23T00:00:00+01:00", "2026-03-30T00:00:00+02:00"};
  assert_starts(j, starts, 2);
  json_decref(j);
  analytics_free(a);
  tz_free(z);
}

static void test_points_are_capped(void **state) {
  (void)state;
  struct tz *z = zone("UTC");
  struct analytics *a;
  /* 10,000 hours exactly: allowed; one more second makes 10,001 points */
  int64_t from = at("2026-01-01T00:00:00Z");
  assert_int_equal(
      analytics_new(z, TZ_HOUR, from, from + 10000LL * 3600 * 1000000, ANALYTICS_POINTS_MAX, &a),
      ANALYTICS_OK);
  assert_int_equal(analytics_points(a), 10000);
  analytics_free(a);
  assert_int_equal(analytics_new(z, TZ_HOUR, from, from + 10000LL * 3600 * 1000000 + 1000000,
                                 ANALYTICS_POINTS_MAX, &a),
                   ANALYTICS_TOO_MANY_POINTS);
  assert_null(a);
  /* a year of days is far below the cap */
  assert_int_equal(
      analytics_new(z, TZ_DAY, from, at("2027-01-01T00:00:00Z"), ANALYTICS_POINTS_MAX, &a),
      ANALYTICS_OK);
  assert_int_equal(analytics_points(a), 365);
  analytics_free(a);
  tz_free(z);
}

/* ---- numbers ---- */

static void test_avg_and_percentiles(void **state) {
  (void)state;
  assert_int_equal(analytics_avg_milli(10, 3), 3333);    /* 3.3333 */
  assert_int_equal(analytics_avg_milli(2, 3), 667);      /* 0.6667 */
  assert_int_equal(analytics_avg_milli(1, 2000), 1);     /* 0.0005: half up */
  assert_int_equal(analytics_avg_milli(1, 2001), 0);     /* 0.00049975 */
  assert_int_equal(analytics_avg_milli(600, 2), 300000); /* 300 */
  assert_int_equal(analytics_avg_milli(0, 5), 0);        /* nothing lasted */
  /* past the integer path (sum * 2000 would overflow): 5e15 / 3 = 1666666666666666.667 */
  assert_int_equal(analytics_avg_milli(5000000000000000LL, 3), 1666666666666666667LL);

  /* durations 1..10, one each: ranks 5, 9, 10 (ceil 9.9) */
  uint64_t h[ANALYTICS_HIST_BUCKETS] = {0};
  for (int s = 1; s <= 10; s++) h[analytics_hist_bucket(s)]++;
  assert_int_equal(analytics_percentile(h, 10, 50), 5);
  assert_int_equal(analytics_percentile(h, 10, 90), 9);
  assert_int_equal(analytics_percentile(h, 10, 99), 10);
  /* above 10 s the bucket's lower edge: edges go 10, 11, 12, 13, 14, 16, 18, 20, 23, 26, 29,
   * 33, 37, 42, 48, 55, 63, 72, 82, 94, 108 (each the one before * 1.15, rounded down): 100 s
   * is in [94, 108) and reported as 94, 6% below */
  memset(h, 0, sizeof h);
  h[analytics_hist_bucket(100)] = 1;
  assert_int_equal(analytics_hist_lower(analytics_hist_bucket(100)), 94);
  assert_int_equal(analytics_percentile(h, 1, 50), 94);
  assert_int_equal(analytics_percentile(h, 1, 99), 94);
  /* 99 conversations of 0 s and one of 300 s: p99 is rank 99 (0 s), p100 would be the 300 */
  memset(h, 0, sizeof h);
  h[0] = 99;
  h[analytics_hist_bucket(300)] = 1;
  assert_int_equal(analytics_percentile(h, 100, 99), 0);
  assert_int_equal(analytics_percentile(h, 100, 100),
                   analytics_hist_lower(analytics_hist_bucket(300)));
  assert_true(analytics_hist_lower(analytics_hist_bucket(300)) <= 300);
  assert_true(analytics_hist_lower(analytics_hist_bucket(300)) * 115 / 100 >= 300);
}

static void test_cells_are_accumulated(void **state) {
  (void)state;
  struct tz *z = zone("UTC");
  struct analytics *a;
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-05-01T00:00:00Z"), at("2026-05-03T00:00:00Z"), 100, &a),
      ANALYTICS_OK);
  uint32_t h1[ANALYTICS_HIST_BUCKETS] = {0}, h2[ANALYTICS_HIST_BUCKETS] = {0},
           hd1[ANALYTICS_HIST_BUCKETS] = {0}, hd2[ANALYTICS_HIST_BUCKETS] = {0};
  /* FULL: 2 conversations of 5 s and 7 s (acc-a, agent-1, web, completed, success) on day 1 */
  h1[5] = 1;
  h1[7] = 1;
  struct analytics_cell c1 = full("2026-05-01T10:00:00Z", "acc-a", "agent-1", "web", "completed",
                                  "success", 2, 10, 12, h1);
  /* FULL: 1 conversation of 3 s, failed, unknown agent/platform/outcome, on day 2 */
  h2[3] = 1;
  struct analytics_cell c2 =
      full("2026-05-02T23:59:59Z", "acc-b", NULL, NULL, "failed", NULL, 1, 0, 3, h2);
  /* TOTAL: 3 conversations (durations 1, 1, 9) known only in totals and the series, without a
   * hist (as the store gives them); their breakdowns come as DIM cells: status 2 completed + 1
   * failed, whose hists hold the durations (store.h: each conversation in one hist), account
   * acc-a 3 */
  struct analytics_cell c3 = {.kind = ANALYTICS_CELL_TOTAL,
                              .at_us = at("2026-05-02T00:00:00Z"),
                              .conversations = 3,
                              .messages = 9,
                              .duration_sum = 11};
  hd1[1] = 2;
  hd2[9] = 1;
  struct analytics_cell d1 = {.kind = ANALYTICS_CELL_DIM,
                              .dim = ANALYTICS_DIM_STATUS,
                              .at_us = at("2026-05-02T00:00:00Z"),
                              .conversations = 2,
                              .messages = 8,
                              .duration_sum = 2,
                              .hist = hd1};
  d1.value[ANALYTICS_DIM_STATUS] = "completed";
  struct analytics_cell d2 = d1;
  d2.conversations = 1;
  d2.messages = 1;
  d2.duration_sum = 9;
  d2.hist = hd2;
  d2.value[ANALYTICS_DIM_STATUS] = "failed";
  struct analytics_cell d3 = {.kind = ANALYTICS_CELL_DIM,
                              .dim = ANALYTICS_DIM_ACCOUNT,
                              .at_us = at("2026-05-02T00:00:00Z"),
                              .conversations = 3,
                              .messages = 9,
                              .duration_sum = 11};
  d3.value[ANALYTICS_DIM_ACCOUNT] = "acc-a";
  const struct analytics_cell *cells[] = {&c1, &c2, &c3, &d1, &d2, &d3};
  for (size_t i = 0; i < sizeof cells / sizeof *cells; i++) assert_true(analytics_add(a, cells[i]));
  json_t *j = render(a, "UTC");
  /* totals: 6 conversations, 19 messages, 26 s; completed 2 + 2, failed 1 + 1; durations
   * 1,1,3,5,7,9: p50 rank 3 -> 3, p90 rank 6 (ceil 5.4) -> 9, p99 rank 6 -> 9; avg 26/6 = 4.333 */
  assert_int_equal(num(j, "totals.conversations"), 6);
  assert_int_equal(num(j, "totals.completed"), 4);
  assert_int_equal(num(j, "totals.failed"), 2);
  assert_int_equal(num(j, "totals.messages"), 19);
  assert_int_equal(num(j, "totals.durationSeconds.sum"), 26);
  assert_int_equal(num(j, "totals.durationSeconds.p50"), 3);
  assert_int_equal(num(j, "totals.durationSeconds.p90"), 9);
  assert_int_equal(num(j, "totals.durationSeconds.p99"), 9);
  assert_true(json_real_value(json_object_get(
                  json_object_get(json_object_get(j, "totals"), "durationSeconds"), "avg")) ==
              4.333);
  /* byStatus: completed 4 (c1 2 + d1 2), failed 2 (c2 + d2) */
  json_t *by = json_object_get(j, "byStatus");
  assert_int_equal(json_array_size(by), 2);
  assert_string_equal(json_string_value(json_object_get(json_array_get(by, 0), "key")),
                      "completed");
  assert_int_equal(num(json_array_get(by, 0), "conversations"), 4);
  assert_int_equal(num(json_array_get(by, 0), "messages"), 18);
  assert_int_equal(num(json_array_get(by, 1), "conversations"), 2);
  /* byAccount: acc-a 5 (c1 + d3), acc-b 1 */
  by = json_object_get(j, "byAccount");
  assert_int_equal(json_array_size(by), 2);
  assert_int_equal(num(json_array_get(by, 0), "conversations"), 5);
  assert_int_equal(num(json_array_get(by, 0), "durationSeconds.sum"), 23);
  /* byAgent: only FULL cells: agent-1 2, unknown 1 (key null, last on a tie) */
  by = json_object_get(j, "byAgent");
  assert_int_equal(json_array_size(by), 2);
  assert_int_equal(num(json_array_get(by, 0), "conversations"), 2);
  assert_true(json_is_null(json_object_get(json_array_get(by, 1), "key")));
  /* byOutcome: success 2, null 1 */
  by = json_object_get(j, "byOutcome");
  assert_string_equal(json_string_value(json_object_get(json_array_get(by, 0), "key")), "success");
  assert_true(json_is_null(json_object_get(json_array_get(by, 1), "key")));
  /* series: day 1 c1 (2), day 2 c2 + c3 (4); DIM cells never count there */
  json_t *series = json_object_get(j, "series");
  assert_int_equal(json_array_size(series), 2);
  assert_int_equal(num(json_array_get(series, 0), "conversations"), 2);
  assert_int_equal(num(json_array_get(series, 1), "conversations"), 4);
  assert_int_equal(num(json_array_get(series, 1), "messages"), 9);
  assert_int_equal(num(json_array_get(series, 1), "durationSeconds.sum"), 14);
  json_decref(j);
  analytics_free(a);
  tz_free(z);
}

static void test_top_twenty_and_other(void **state) {
  (void)state;
  struct tz *z = zone("UTC");
  struct analytics *a;
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-05-01T00:00:00Z"), at("2026-05-02T00:00:00Z"), 100, &a),
      ANALYTICS_OK);
  /* 25 agents: agent-00..agent-22 with 1 conversation each, agent-23 with 2, agent-24 with 5,
   * plus 3 of unknown agent. Ranked: agent-24 (5), null (3), agent-23 (2),
   * then the 22 of 1 by name: agent-00 .. agent-16 fill the top 20; agent-17..agent-22 (6
   * conversations) are "other" */
  char names[25][24];
  for (int i = 0; i < 25; i++) {
    snprintf(names[i], sizeof names[i], "agent-%02d", i);
    int64_t n = i == 24 ? 5 : i == 23 ? 2 : 1;
    struct analytics_cell c =
        full("2026-05-01T01:00:00Z", "acc", names[i], "web", "completed", NULL, n, n, 10 * n, NULL);
    assert_true(analytics_add(a, &c));
  }
  struct analytics_cell c =
      full("2026-05-01T02:00:00Z", "acc", NULL, "web", "completed", NULL, 3, 3, 30, NULL);
  assert_true(analytics_add(a, &c));
  json_t *j = render(a, "UTC");
  json_t *by = json_object_get(j, "byAgent");
  assert_int_equal(json_array_size(by), 21);
  assert_string_equal(json_string_value(json_object_get(json_array_get(by, 0), "key")), "agent-24");
  assert_true(json_is_null(json_object_get(json_array_get(by, 1), "key")));
  assert_string_equal(json_string_value(json_object_get(json_array_get(by, 2), "key")), "agent-23");
  assert_string_equal(json_string_value(json_object_get(json_array_get(by, 3), "key")), "agent-00");
  assert_string_equal(json_string_value(json_object_get(json_array_get(by, 19), "key")),
                      "agent-16");
  json_t *other = json_array_get(by, 20);
  assert_string_equal(json_string_value(json_object_get(other, "key")), "other");
  assert_int_equal(num(other, "conversations"), 6);
  assert_int_equal(num(other, "durationSeconds.sum"), 60);
  /* exactly 20 values: no "other" */
  by = json_object_get(j, "byPlatform");
  assert_int_equal(json_array_size(by), 1);
  assert_int_equal(num(json_array_get(by, 0), "conversations"), 33); /* 5 + 2 + 23 + 3 */
  json_decref(j);
  analytics_free(a);
  tz_free(z);
}

/* Blind indexes "b:X" (or "x:N:X") stand for account X; "gone" is not found; "boom" fails. calls
 * counts the values asked for. */
static int name_fn(void *cls, const char *const *stored, size_t n, char **names) {
  int *calls = cls;
  assert_true(n <= ANALYTICS_NAME_BATCH);
  for (size_t i = 0; i < n; i++) {
    (*calls)++;
    assert_null(names[i]);
    if (strcmp(stored[i], "boom") == 0) return 7;
    if (strcmp(stored[i], "gone") == 0) continue;
    const char *colon = strrchr(stored[i], ':'); /* "b:X", "x:N:X": X */
    names[i] = strdup(colon ? colon + 1 : stored[i]);
    assert_non_null(names[i]);
  }
  return 0;
}

static void test_accounts_are_named(void **state) {
  (void)state;
  struct tz *z = zone("UTC");
  struct analytics *a;
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-05-01T00:00:00Z"), at("2026-05-02T00:00:00Z"), 100, &a),
      ANALYTICS_OK);
  /* acc-x sealed (b:acc-x, 3) and plain (acc-x, 2): one entry of 5; acc-y 4; gone 1 (other) */
  struct analytics_cell cells[] = {
      full("2026-05-01T01:00:00Z", "b:acc-x", "ag", "web", "completed", NULL, 3, 3, 3, NULL),
      full("2026-05-01T01:00:00Z", "acc-x", "ag", "web", "completed", NULL, 2, 2, 2, NULL),
      full("2026-05-01T01:00:00Z", "b:acc-y", "ag", "web", "completed", NULL, 4, 4, 4, NULL),
      full("2026-05-01T01:00:00Z", "gone", "ag", "web", "completed", NULL, 1, 1, 1, NULL),
      full("2026-05-01T01:00:00Z", NULL, "ag", "web", "completed", NULL, 1, 1, 1, NULL),
  };
  for (size_t i = 0; i < sizeof cells / sizeof *cells; i++)
    assert_true(analytics_add(a, &cells[i]));
  int calls = 0;
  char *text;
  size_t len;
  assert_int_equal(analytics_render(a, "UTC", name_fn, &calls, &text, &len), 0);
  assert_int_equal(calls, 4); /* the unknown account is not looked up */
  json_t *j = json_loads(text, 0, NULL);
  free(text);
  json_t *by = json_object_get(j, "byAccount");
  assert_int_equal(json_array_size(by), 4);
  assert_string_equal(json_string_value(json_object_get(json_array_get(by, 0), "key")), "acc-x");
  assert_int_equal(num(json_array_get(by, 0), "conversations"), 5);
  assert_string_equal(json_string_value(json_object_get(json_array_get(by, 1), "key")), "acc-y");
  assert_true(json_is_null(json_object_get(json_array_get(by, 2), "key")));
  assert_string_equal(json_string_value(json_object_get(json_array_get(by, 3), "key")), "other");
  assert_int_equal(num(json_array_get(by, 3), "conversations"), 1);
  json_decref(j);
  analytics_free(a);

  /* a store error while naming is the answer's error */
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-05-01T00:00:00Z"), at("2026-05-02T00:00:00Z"), 100, &a),
      ANALYTICS_OK);
  struct analytics_cell c =
      full("2026-05-01T01:00:00Z", "boom", "ag", "web", "completed", NULL, 1, 1, 1, NULL);
  assert_true(analytics_add(a, &c));
  assert_int_equal(analytics_render(a, "UTC", name_fn, &calls, &text, &len), 7);
  assert_null(text);
  analytics_free(a);
  tz_free(z);
}

static void test_json_byte_for_byte(void **state) {
  (void)state;
  struct tz *z = zone("Europe/Berlin");
  struct analytics *a;
  /* two Berlin days, one conversation of 10 s and one of 3 s on the first; nothing counted on
   * the second (avg and percentiles of nothing are null, sums 0) */
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-03-28T23:00:00Z"), at("2026-03-30T22:00:00Z"), 100, &a),
      ANALYTICS_OK);
  uint32_t h[ANALYTICS_HIST_BUCKETS] = {0};
  h[3] = 1;
  h[10] = 1;
  struct analytics_cell c =
      full("2026-03-29T08:00:00Z", "acc", "ag", "phone", "completed", "success", 2, 7, 13, h);
  assert_true(analytics_add(a, &c));
  char *text;
  size_t len;
  assert_int_equal(analytics_render(a, "Europe/Berlin", NULL, NULL, &text, &len), 0);
  const char *entry =
      "\"conversations\":2,\"messages\":7,\"durationSeconds\":{\"sum\":13,"
      "\"avg\":6.5}";
  char expected[2048];
  snprintf(expected, sizeof expected,
           "{\"totals\":{\"conversations\":2,\"completed\":2,\"failed\":0,\"messages\":7,"
           "\"durationSeconds\":{\"sum\":13,\"avg\":6.5,\"p50\":3,\"p90\":10,\"p99\":10}},"
           "\"byStatus\":[{\"key\":\"completed\",%s}],"
           "\"byPlatform\":[{\"key\":\"phone\",%s}],"
           "\"byAgent\":[{\"key\":\"ag\",%s}],"
           "\"byAccount\":[{\"key\":\"acc\",%s}],"
           "\"byOutcome\":[{\"key\":\"success\",%s}],"
           "\"series\":[{\"start\":\"2026-03-29T00:00:00+01:00\",%s},"
           "{\"start\":\"2026-03-30T00:00:00+02:00\",\"conversations\":0,\"messages\":0,"
           "\"durationSeconds\":{\"sum\":0,\"avg\":null}}],"
           "\"query\":{\"from\":\"2026-03-28T23:00:00Z\",\"to\":\"2026-03-30T22:00:00Z\","
           "\"interval\":\"day\",\"tz\":\"Europe/Berlin\"}}",
           entry, entry, entry, entry, entry, entry);
  assert_string_equal(text, expected);
  free(text);
  analytics_free(a);

  /* nothing at all: every breakdown empty, totals zero with null avg and percentiles, and
   * thirds are rounded to 3 decimals */
  assert_int_equal(
      analytics_new(z, TZ_HOUR, at("2026-03-28T23:00:00Z"), at("2026-03-28T23:30:00Z"), 100, &a),
      ANALYTICS_OK);
  assert_int_equal(analytics_render(a, "Europe/Berlin", NULL, NULL, &text, &len), 0);
  assert_non_null(strstr(text,
                         "{\"totals\":{\"conversations\":0,\"completed\":0,\"failed\":0,"
                         "\"messages\":0,\"durationSeconds\":{\"sum\":0,\"avg\":null,"
                         "\"p50\":null,\"p90\":null,\"p99\":null}},\"byStatus\":[],"));
  free(text);
  analytics_free(a);
  assert_int_equal(
      analytics_new(z, TZ_HOUR, at("2026-03-28T23:00:00Z"), at("2026-03-28T23:30:00Z"), 100, &a),
      ANALYTICS_OK);
  struct analytics_cell thirds =
      full("2026-03-28T23:10:00Z", "acc", "ag", "phone", "completed", NULL, 3, 3, 10, NULL);
  assert_true(analytics_add(a, &thirds));
  assert_int_equal(analytics_render(a, "Europe/Berlin", NULL, NULL, &text, &len), 0);
  assert_non_null(strstr(text, "\"durationSeconds\":{\"sum\":10,\"avg\":3.333,"));
  free(text);
  analytics_free(a);
  tz_free(z);
}

static void test_keys_are_escaped(void **state) {
  (void)state;
  struct tz *z = zone("UTC");
  struct analytics *a;
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-05-01T00:00:00Z"), at("2026-05-02T00:00:00Z"), 100, &a),
      ANALYTICS_OK);
  const char *keys[] = {"quote\"back\\slash", "tab\tnl\ncr\r\x01", "caf\xc3\xa9 \xe6\x97\xa5",
                        "bad\xff"};
  for (int i = 0; i < 4; i++) {
    struct analytics_cell c =
        full("2026-05-01T01:00:00Z", "acc", keys[i], "web", "completed", NULL, 4 - i, 1, 1, NULL);
    assert_true(analytics_add(a, &c));
  }
  char *text;
  size_t len;
  assert_int_equal(analytics_render(a, "UTC", NULL, NULL, &text, &len), 0);
  assert_non_null(strstr(text, "\"key\":\"quote\\\"back\\\\slash\""));
  assert_non_null(strstr(text, "\"key\":\"tab\\tnl\\ncr\\r\\u0001\""));
  json_t *j = json_loads(text, 0, NULL);
  assert_non_null(j);
  json_t *by = json_object_get(j, "byAgent");
  for (int i = 0; i < 3; i++)
    assert_string_equal(json_string_value(json_object_get(json_array_get(by, (size_t)i), "key")),
                        keys[i]);
  /* bytes that are not UTF-8 become U+FFFD: the answer stays valid JSON */
  assert_string_equal(json_string_value(json_object_get(json_array_get(by, 3), "key")),
                      "bad\xef\xbf\xbd");
  json_decref(j);
  free(text);
  analytics_free(a);
  tz_free(z);
}

/* Every account value is named before the ranking: an account stored in two forms (plaintext
 * before ENCRYPTION_KEYS, a blind index after) is one entry and may be the biggest; a tie at the
 * 20th place goes by the account id, not by the blind index's bytes. */
static void test_accounts_are_named_before_the_cut(void **state) {
  (void)state;
  struct tz *z = zone("UTC");
  struct analytics *a;
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-05-01T00:00:00Z"), at("2026-05-02T00:00:00Z"), 100, &a),
      ANALYTICS_OK);
  /* acc-00..acc-20 with 3 each, stored as "x:<20 - i>:acc-i" (blind bytes ascending from acc-20
   * down); acc-big as b:acc-big (2) and acc-big (2): 4. Named: acc-big, then acc-00..acc-18 make
   * the top 20; acc-19 and acc-20 (6) are the rest. */
  char stored[21][32];
  for (int i = 0; i <= 20; i++) {
    snprintf(stored[i], sizeof stored[i], "x:%d:acc-%02d", 20 - i, i);
    struct analytics_cell c =
        full("2026-05-01T01:00:00Z", stored[i], "ag", "web", "completed", NULL, 3, 3, 3, NULL);
    assert_true(analytics_add(a, &c));
  }
  struct analytics_cell big[] = {
      full("2026-05-01T02:00:00Z", "b:acc-big", "ag", "web", "completed", NULL, 2, 2, 2, NULL),
      full("2026-05-01T03:00:00Z", "acc-big", "ag", "web", "completed", NULL, 2, 2, 2, NULL),
  };
  for (size_t i = 0; i < 2; i++) assert_true(analytics_add(a, &big[i]));
  int calls = 0;
  char *text;
  size_t len;
  assert_int_equal(analytics_render(a, "UTC", name_fn, &calls, &text, &len), 0);
  assert_int_equal(calls, 23);
  json_t *j = json_loads(text, 0, NULL);
  assert_non_null(j);
  free(text);
  json_t *by = json_object_get(j, "byAccount");
  assert_int_equal(json_array_size(by), 21);
  assert_string_equal(json_string_value(json_object_get(json_array_get(by, 0), "key")), "acc-big");
  assert_int_equal(num(json_array_get(by, 0), "conversations"), 4);
  for (int i = 1; i < 20; i++) {
    char want[24];
    snprintf(want, sizeof want, "acc-%02d", i - 1);
    json_t *e = json_array_get(by, (size_t)i);
    assert_string_equal(json_string_value(json_object_get(e, "key")), want);
    assert_null(json_object_get(e, "rest"));
  }
  json_t *rest = json_array_get(by, 20);
  assert_string_equal(json_string_value(json_object_get(rest, "key")), "other");
  assert_true(json_is_true(json_object_get(rest, "rest")));
  assert_int_equal(num(rest, "conversations"), 6);
  json_decref(j);
  analytics_free(a);
  tz_free(z);
}

/* A real value "other" is an entry like any; the summed rest is marked "rest": true. */
static void test_a_real_other_is_not_the_rest(void **state) {
  (void)state;
  struct tz *z = zone("UTC");
  struct analytics *a;
  assert_int_equal(
      analytics_new(z, TZ_DAY, at("2026-05-01T00:00:00Z"), at("2026-05-02T00:00:00Z"), 100, &a),
      ANALYTICS_OK);
  /* agent "other" 30; agent-00..agent-20 one each: 19 of them in the top, 2 the rest */
  struct analytics_cell c =
      full("2026-05-01T01:00:00Z", "acc", "other", "web", "completed", NULL, 30, 0, 0, NULL);
  assert_true(analytics_add(a, &c));
  char names[21][24];
  for (int i = 0; i <= 20; i++) {
    snprintf(names[i], sizeof names[i], "agent-%02d", i);
    c = full("2026-05-01T01:00:00Z", "acc", names[i], "web", "completed", NULL, 1, 0, 0, NULL);
    assert_true(analytics_add(a, &c));
  }
  char *text;
  size_t len;
  assert_int_equal(analytics_render(a, "UTC", NULL, NULL, &text, &len), 0);
  assert_non_null(strstr(text, "\"byAgent\":[{\"key\":\"other\",\"conversations\":30,"));
  assert_non_null(
      strstr(text, "{\"key\":\"other\",\"rest\":true,\"conversations\":2,\"messages\":0,"));
  /* one breakdown without a rest: no "rest" anywhere in it */
  assert_non_null(strstr(text, "\"byPlatform\":[{\"key\":\"web\",\"conversations\":51,"));
  free(text);
  analytics_free(a);
  tz_free(z);
}

/* A start label is a local date-time of years 0001..9999: a first interval starting before
 * (from) or a last one after (to) is refused rather than written clamped. */
static void test_start_labels_out_of_range(void **state) {
  (void)state;
  struct tz *ny = zone("America/New_York"), *kiri = zone("Pacific/Kiritimati"), *utc = zone("UTC");
  struct analytics *a;
  /* 0001-01-01T00:00Z is 0000-12-31 in New York (LMT -4:56:02) */
  assert_int_equal(
      analytics_new(ny, TZ_DAY, at("0001-01-01T00:00:00Z"), at("0001-01-03T00:00:00Z"), 100, &a),
      ANALYTICS_FROM_OUT_OF_RANGE);
  assert_int_equal(
      analytics_new(ny, TZ_HOUR, at("0001-01-01T04:00:00Z"), at("0001-01-01T06:00:00Z"), 100, &a),
      ANALYTICS_FROM_OUT_OF_RANGE); /* 23:03:58 local: the hour starts 0000-12-31 */
  assert_int_equal(
      analytics_new(ny, TZ_DAY, at("0001-01-01T05:00:00Z"), at("0001-01-03T00:00:00Z"), 100, &a),
      ANALYTICS_OK);
  analytics_free(a);
  /* 9999-12-31T12:00Z is 10000-01-01T02:00 at +14: the last day starts after 9999 */
  assert_int_equal(
      analytics_new(kiri, TZ_DAY, at("9999-12-30T00:00:00Z"), at("9999-12-31T12:00:00Z"), 100, &a),
      ANALYTICS_TO_OUT_OF_RANGE);
  assert_int_equal(
      analytics_new(kiri, TZ_DAY, at("9999-12-30T00:00:00Z"), at("9999-12-31T09:00:00Z"), 100, &a),
      ANALYTICS_OK);
  analytics_free(a);
  /* UTC, the whole range: every label fits */
  assert_int_equal(
      analytics_new(utc, TZ_WEEK, at("0001-01-01T00:00:00Z"), at("0001-03-01T00:00:00Z"), 100, &a),
      ANALYTICS_OK);
  analytics_free(a);
  assert_int_equal(
      analytics_new(utc, TZ_HOUR, at("9999-12-31T20:00:00Z"), at("9999-12-31T23:59:59Z"), 100, &a),
      ANALYTICS_OK);
  json_t *j = render(a, "UTC");
  json_t *series = json_object_get(j, "series");
  assert_string_equal(json_string_value(json_object_get(json_array_get(series, 3), "start")),
                      "9999-12-31T23:00:00+00:00");
  json_decref(j);
  analytics_free(a);
  tz_free(ny);
  tz_free(kiri);
  tz_free(utc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_utc_days),
      cmocka_unit_test(test_new_york_spring_forward_day_is_23_hours),
      cmocka_unit_test(test_new_york_fall_back_hours_and_day),
      cmocka_unit_test(test_thirty_minute_zones),
      cmocka_unit_test(test_berlin_week_across_dst),
      cmocka_unit_test(test_points_are_capped),
      cmocka_unit_test(test_avg_and_percentiles),
      cmocka_unit_test(test_cells_are_accumulated),
      cmocka_unit_test(test_top_twenty_and_other),
      cmocka_unit_test(test_accounts_are_named),
      cmocka_unit_test(test_json_byte_for_byte),
      cmocka_unit_test(test_keys_are_escaped),
      cmocka_unit_test(test_accounts_are_named_before_the_cut),
      cmocka_unit_test(test_a_real_other_is_not_the_rest),
      cmocka_unit_test(test_start_labels_out_of_range),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
