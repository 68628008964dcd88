/* The fast lane's bookkeeping (lane.h). Linear scans: the entries are at most the deliveries
 * in flight (DELIVERY_CONCURRENCY), the heads one per subscription. */
#include "store/lane.h"

#include <stdlib.h>
#include <string.h>

static bool grow(void **p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return true;
  size_t ncap = *cap ? *cap : 16;
  while (ncap < need) ncap *= 2;
  void *more = realloc(*p, ncap * size);
  if (!more) return false;
  *p = more;
  *cap = ncap;
  return true;
}

static bool copy_lanes(struct lanes *to, const struct lanes *from) {
  if (!grow((void **)&to->e, &to->cap, from->n, sizeof *to->e) ||
      !grow((void **)&to->h, &to->caph, from->nh, sizeof *to->h))
    return false;
  if (from->n) memcpy(to->e, from->e, from->n * sizeof *to->e);
  if (from->nh) memcpy(to->h, from->h, from->nh * sizeof *to->h);
  to->n = from->n;
  to->nh = from->nh;
  return true;
}

void lanes_begin(struct lane_set *l) { l->saving = false; }

bool lanes_touch(struct lane_set *l) {
  if (l->saving) return true;
  if (!copy_lanes(&l->saved, &l->cur)) return false;
  l->saving = true;
  return true;
}

void lanes_rollback(struct lane_set *l) {
  if (!l->saving) return;
  /* saved is at least as large as what it holds: swapping cannot fail */
  struct lanes t = l->cur;
  l->cur = l->saved;
  l->saved = t;
  l->saving = false;
}

void lanes_free(struct lane_set *l) {
  free(l->cur.e);
  free(l->cur.h);
  free(l->saved.e);
  free(l->saved.h);
  memset(l, 0, sizeof *l);
}

static long head_index(const struct lanes *l, const char *sub_id) {
  for (size_t i = 0; i < l->nh; i++)
    if (strcmp(l->h[i].sub_id, sub_id) == 0) return (long)i;
  return -1;
}

bool lanes_head(const struct lanes *l, const char *sub_id, int64_t *seq) {
  long i = head_index(l, sub_id);
  if (i < 0) return false;
  *seq = l->h[i].seq;
  return true;
}

bool lanes_set_head(struct lanes *l, const char *sub_id, int64_t seq) {
  long i = head_index(l, sub_id);
  if (i >= 0) {
    if (seq > l->h[i].seq) l->h[i].seq = seq;
    return true;
  }
  if (!grow((void **)&l->h, &l->caph, l->nh + 1, sizeof *l->h)) return false;
  struct lane_head *h = &l->h[l->nh++];
  memset(h, 0, sizeof *h);
  strncpy(h->sub_id, sub_id, sizeof h->sub_id - 1);
  h->seq = seq;
  return true;
}

int64_t lanes_counted(const struct lanes *l, const char *sub_id) {
  long i = head_index(l, sub_id);
  return i < 0 ? 0 : l->h[i].counted;
}

bool lanes_set_counted(struct lanes *l, const char *sub_id, int64_t base, int64_t seq) {
  if (head_index(l, sub_id) < 0 && !lanes_set_head(l, sub_id, base)) return false;
  struct lane_head *h = &l->h[head_index(l, sub_id)];
  if (seq > h->counted) h->counted = seq;
  return true;
}

bool lanes_add(struct lanes *l, const struct lane_entry *e) {
  if (!grow((void **)&l->e, &l->cap, l->n + 1, sizeof *l->e)) return false;
  l->e[l->n++] = *e;
  return true;
}

long lanes_find(const struct lanes *l, const char *sub_id, int64_t seq, int64_t token) {
  for (size_t i = 0; i < l->n; i++)
    if (l->e[i].seq == seq && (token < 0 || l->e[i].token == token) &&
        strcmp(l->e[i].sub_id, sub_id) == 0)
      return (long)i;
  return -1;
}

long lanes_find_conversation(const struct lanes *l, const char *sub_id,
                             const char *conversation_id) {
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->e[i].conversation_id, conversation_id) == 0 &&
        strcmp(l->e[i].sub_id, sub_id) == 0)
      return (long)i;
  return -1;
}

long lanes_find_expired(const struct lanes *l, const char *sub_id, int64_t now_us) {
  for (size_t i = 0; i < l->n; i++)
    if (l->e[i].until_us <= now_us && (!sub_id || strcmp(l->e[i].sub_id, sub_id) == 0))
      return (long)i;
  return -1;
}

long lanes_find_sub(const struct lanes *l, const char *sub_id) {
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->e[i].sub_id, sub_id) == 0) return (long)i;
  return -1;
}

void lanes_remove(struct lanes *l, size_t i) {
  if (i >= l->n) return;
  l->e[i] = l->e[--l->n];
}

bool lanes_cursor(const struct lanes *l, const char *sub_id, int64_t *seq) {
  int64_t head;
  if (!lanes_head(l, sub_id, &head)) return false;
  for (size_t i = 0; i < l->n; i++)
    if (l->e[i].seq - 1 < head && strcmp(l->e[i].sub_id, sub_id) == 0) head = l->e[i].seq - 1;
  *seq = head;
  return true;
}

void lanes_forget_sub(struct lanes *l, const char *sub_id) {
  for (size_t i = l->n; i-- > 0;)
    if (strcmp(l->e[i].sub_id, sub_id) == 0) lanes_remove(l, i);
  long h = head_index(l, sub_id);
  if (h >= 0) l->h[h] = l->h[--l->nh];
}

void lanes_forget_conversation(struct lanes *l, const char *conversation_id) {
  for (size_t i = l->n; i-- > 0;)
    if (strcmp(l->e[i].conversation_id, conversation_id) == 0) lanes_remove(l, i);
}
