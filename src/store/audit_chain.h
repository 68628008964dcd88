/* The audit log's hash chain, shared by every backend and by `gensendrep audit verify`.
 *
 * Entry i stores hash_i = SHA-256(hash_{i-1} || content_i) (model/audit.h gives content; the
 * entry before the first has 32 zero bytes as its hash), so changing or removing any entry
 * breaks the link of the next one. The store also keeps the chain's head (last id and hash),
 * updated in the same transaction as every append, so removing the newest entries is seen too.
 * Appends are serialised: SQLite has one writer; PostgreSQL instances take the head row's lock
 * (FOR UPDATE) at the end of their batch, after every other lock the batch needs. */
#ifndef GSR_AUDIT_CHAIN_H
#define GSR_AUDIT_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "model/audit.h"
#include "store/store.h"

/* Sets e->hash from prev (the previous entry's hash, or AUDIT_HASH_LEN zero bytes) and e's
 * content (e->id must be set). */
void audit_chain_link(const unsigned char prev[AUDIT_HASH_LEN], struct audit_entry *e);

struct audit_verify_result {
  int64_t entries;   /* entries checked */
  int64_t first_bad; /* 0: the chain is whole; else the id of the first entry whose link is
                      * broken (edited, or an entry before it removed), or the head's id when
                      * entries after the last one were removed */
  char why[160];     /* what is wrong at first_bad, for people */
  /* When whole: the newest entry checked (0 and zeros for an empty log), to be kept outside
   * the database as an anchor: a later verify can tell whether the chain still holds it. */
  int64_t head_id;
  unsigned char head_hash[AUDIT_HASH_LEN];
};

/* Walks the whole chain, oldest first, a page at a time (constant memory). STORE_OK with
 * r->first_bad 0 when every link holds. */
__attribute__((warn_unused_result)) enum store_status audit_chain_verify(
    struct store *s, struct audit_verify_result *r);

#endif
