/* Byte-exact access to members of a stored JSON document, so answers repeat what a client
 * sent ("as received") without re-serialising numbers or strings. */
#ifndef GSR_JSON_RAW_H
#define GSR_JSON_RAW_H

#include <stdbool.h>
#include <stddef.h>

/* Finds top-level member key of the JSON object in doc[0..len) (which must be valid JSON, as
 * every stored body is). On success *val and *val_len are the member value's exact bytes. */
bool json_raw_member(const char *doc, size_t len, const char *key, const char **val,
                     size_t *val_len);

#endif
