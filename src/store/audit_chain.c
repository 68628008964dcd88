/* The audit log's hash chain (store/audit_chain.h). */
#include "store/audit_chain.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ext/crypto.h"

void audit_chain_link(const unsigned char prev[AUDIT_HASH_LEN], struct audit_entry *e) {
  unsigned char buf[AUDIT_HASH_LEN + AUDIT_CONTENT_MAX];
  memcpy(buf, prev, AUDIT_HASH_LEN);
  size_t n = audit_entry_content(e, buf + AUDIT_HASH_LEN);
  crypto_sha256(buf, AUDIT_HASH_LEN + n, e->hash);
}

#define VERIFY_PAGE 1000

static void broken(struct audit_verify_result *r, int64_t id, const char *why) {
  r->first_bad = id;
  snprintf(r->why, sizeof r->why, "%s", why);
}

/* Checks the entries after *prev_id, page by page until a short one, carrying the link in prev
 * and *prev_id. STORE_OK with r->first_bad set at the first broken link. */
static enum store_status verify_pages(struct store *s, struct audit_verify_result *r,
                                      unsigned char prev[AUDIT_HASH_LEN], int64_t *prev_id) {
  struct store_audit_filter f = {.action = -1, .limit = VERIFY_PAGE};
  for (;;) {
    struct store_audit_page page = {0};
    f.cursor = *prev_id;
    enum store_status st = store_audit_list(s, &f, &page);
    if (st != STORE_OK) return st;
    for (size_t i = 0; i < page.count; i++) {
      struct audit_entry e = page.items[i];
      r->entries++;
      if (e.id != *prev_id + 1) {
        broken(r, e.id,
               *prev_id == 0 ? "the log does not start at entry 1: earlier entries were removed"
                             : "entries before this one were removed");
        free(page.items);
        return STORE_OK;
      }
      if (e.damaged) {
        broken(r, e.id,
               "this entry holds what no entry can (a text longer than its field, a NUL byte "
               "inside a text, or a hash not 32 bytes long): it was changed");
        free(page.items);
        return STORE_OK;
      }
      unsigned char stored[AUDIT_HASH_LEN];
      memcpy(stored, e.hash, sizeof stored);
      audit_chain_link(prev, &e);
      if (!crypto_equal(stored, e.hash, sizeof stored)) {
        broken(r, e.id, "this entry was changed (or the one before it was replaced)");
        free(page.items);
        return STORE_OK;
      }
      memcpy(prev, stored, AUDIT_HASH_LEN);
      *prev_id = e.id;
    }
    size_t got = page.count;
    free(page.items);
    if (got < VERIFY_PAGE) return STORE_OK;
  }
}

enum store_status audit_chain_verify(struct store *s, struct audit_verify_result *r) {
  memset(r, 0, sizeof *r);
  unsigned char prev[AUDIT_HASH_LEN] = {0};
  int64_t prev_id = 0;
  for (;;) {
    enum store_status st = verify_pages(s, r, prev, &prev_id);
    if (st != STORE_OK || r->first_bad) return st;
    int64_t head_id;
    unsigned char head_hash[AUDIT_HASH_LEN];
    st = store_audit_head(s, &head_id, head_hash);
    if (st != STORE_OK) return st;
    if (head_id == prev_id && crypto_equal(head_hash, prev, sizeof prev)) {
      r->head_id = prev_id;
      memcpy(r->head_hash, prev, AUDIT_HASH_LEN);
      return STORE_OK;
    }
    /* The head is read after the last page: while the service runs, entries appended meanwhile
     * put it further on. Only when none are there to read were the newest removed. */
    if (head_id > prev_id) {
      struct store_audit_page next = {0};
      struct store_audit_filter f = {.action = -1, .cursor = prev_id, .limit = 1};
      st = store_audit_list(s, &f, &next);
      size_t appended = next.count;
      free(next.items);
      if (st != STORE_OK) return st;
      if (appended) continue;
    }
    broken(r, head_id > prev_id ? prev_id + 1 : head_id,
           head_id > prev_id ? "the newest entries were removed (the chain's head is further on)"
                             : "the chain's head does not match its newest entry");
    return STORE_OK;
  }
}
