/* Sealing rows the same way on every backend (sealing.h). */
#include "store/sealing.h"

#include "core/log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t store_seal_aad(char out[STORE_AAD_MAX], const char *what, const char *pk, const char *pk2) {
  size_t pos = 0;
  const char *parts[3] = {what, pk, pk2};
  for (int i = 0; i < 3 && parts[i]; i++) {
    if (i && pos < STORE_AAD_MAX) out[pos++] = '\0';
    size_t n = strlen(parts[i]);
    if (n > STORE_AAD_MAX - pos) n = STORE_AAD_MAX - pos;
    memcpy(out + pos, parts[i], n);
    pos += n;
  }
  return pos;
}

bool store_id_sealable(const char *value) { return !value || (unsigned char)value[0] >= 0x20; }

bool store_index_text(const struct seal_ring *r, size_t i, const char *value,
                      char out[STORE_INDEX_TEXT_LEN + 1]) {
  static const char hex[] = "0123456789abcdef";
  unsigned char idx[SEAL_INDEX_LEN];
  if (!seal_index(r, i, value, strlen(value), idx)) return false;
  out[0] = STORE_INDEX_MARK;
  for (size_t k = 0; k < SEAL_INDEX_LEN; k++) {
    out[1 + 2 * k] = hex[idx[k] >> 4];
    out[2 + 2 * k] = hex[idx[k] & 15];
  }
  out[STORE_INDEX_TEXT_LEN] = '\0';
  return true;
}

bool store_seal_id(const struct seal_ring *r, const char *what, const char *conversation_id,
                   const char *v, struct store_sealed_id *out) {
  out->len = 0;
  if (!v) return true;
  size_t len = strlen(v), sealed_len = seal_sealed_len(r, len);
  if (sealed_len > sizeof out->sealed) return false;
  char aad[STORE_AAD_MAX];
  size_t aad_len = store_seal_aad(aad, what, conversation_id, NULL);
  if (!seal_seal(r, aad, aad_len, v, len, out->sealed) || !store_index_text(r, 0, v, out->index))
    return false;
  out->len = sealed_len;
  return true;
}

char *store_accounts_json_ring(const struct seal_ring *r, const char *const *accounts, size_t n) {
  json_t *a = json_array();
  size_t keys = r ? seal_ring_count(r) : 0;
  bool ok = a != NULL;
  for (size_t i = 0; ok && i < n; i++) {
    if (!store_id_sealable(accounts[i])) continue; /* would pass for an index: matches nothing */
    ok = json_array_append_new(a, json_string(accounts[i])) == 0;
    for (size_t k = 0; ok && k < keys; k++) {
      char idx[STORE_INDEX_TEXT_LEN + 1];
      ok = store_index_text(r, k, accounts[i], idx) &&
           json_array_append_new(a, json_string(idx)) == 0;
    }
  }
  char *text = ok ? json_dumps(a, JSON_COMPACT) : NULL;
  json_decref(a);
  return text;
}

bool store_seal_buf_reserve(struct store_seal_buf *b, size_t n) {
  if (n <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < n) cap *= 2;
  unsigned char *d = realloc(b->data, cap);
  if (!d) return false;
  b->data = d;
  b->cap = cap;
  return true;
}

const unsigned char *store_seal_into(struct store_seal_buf *b, const struct seal_ring *r,
                                     const void *aad, size_t aad_len, const void *plain, size_t len,
                                     size_t *out_len) {
  size_t need = seal_sealed_len(r, len);
  if (!store_seal_buf_reserve(b, need)) return NULL;
  if (!seal_seal(r, aad, aad_len, plain, len, b->data)) return NULL;
  *out_len = need;
  return b->data;
}

void store_seal_buf_free(struct store_seal_buf *b) {
  free(b->data);
  b->data = NULL;
  b->cap = 0;
}

bool store_open_text(const struct seal_ring *r, const void *aad, size_t aad_len, const void *sealed,
                     size_t len, char *out, size_t cap) {
  size_t plain = r ? seal_plain_len(sealed, len) : 0;
  size_t got = 0;
  if (!r || !seal_is_sealed(sealed, len) || plain >= cap ||
      !seal_open(r, aad, aad_len, sealed, len, (unsigned char *)out, &got) || got != plain)
    return false;
  out[got] = '\0';
  return strlen(out) == got;
}

bool store_open_id(const struct seal_ring *r, const void *aad, size_t aad_len, const void *sealed,
                   size_t len, char *out, size_t cap) {
  size_t plain = r ? seal_plain_len(sealed, len) : 0;
  size_t got = 0;
  if (!r || plain == 0 || plain >= cap ||
      !seal_open(r, aad, aad_len, sealed, len, (unsigned char *)out, &got) || got != plain)
    return false;
  out[got] = '\0';
  return strlen(out) == got && store_id_sealable(out);
}

static bool unopened_has(char (*ids)[OUTBOX_SUB_ID_MAX], size_t n, const char *id) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(ids[i], id) == 0) return true;
  return false;
}

static bool unopened_add(struct store_unopened *u, const char *id) {
  if (unopened_has(u->cur, u->ncur, id)) return true;
  if (u->ncur == u->capcur) {
    size_t cap = u->capcur ? u->capcur * 2 : 4;
    char(*more)[OUTBOX_SUB_ID_MAX] = realloc(u->cur, cap * sizeof *more);
    if (!more) return false;
    u->cur = more;
    u->capcur = cap;
  }
  snprintf(u->cur[u->ncur++], OUTBOX_SUB_ID_MAX, "%s", id);
  return true;
}

void store_unopened_note(struct store_unopened *u, const char *id) {
  bool known = unopened_has(u->prev, u->nprev, id) || unopened_has(u->cur, u->ncur, id);
  (void)unopened_add(u, id); /* out of memory: logged again next round, nothing worse */
  if (!known)
    log_msg(LOG_ERROR,
            "subscription %s: its sealed URL or account does not open (sealed with a key "
            "ENCRYPTION_KEYS does not hold, or damaged): nothing is delivered for it, its events "
            "wait; put the key back, or replace its url and accountId together (PATCH)",
            id);
}

void store_unopened_end(struct store_unopened *u, bool complete) {
  if (!complete)
    for (size_t i = 0; i < u->nprev; i++) (void)unopened_add(u, u->prev[i]);
  free(u->prev);
  u->prev = u->cur;
  u->nprev = u->ncur;
  u->cur = NULL;
  u->ncur = u->capcur = 0;
}

void store_unopened_free(struct store_unopened *u) {
  free(u->prev);
  free(u->cur);
  memset(u, 0, sizeof *u);
}
