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

/* Steps through the members of the JSON object, or the elements of the array, in doc[0..len)
 * (valid JSON, as above). *pos starts at 0 and is advanced by each call. For each member,
 * *key and *key_len are its key token, quotes and escapes included (NULL and 0 for an array
 * element), and *val and *val_len its value's exact bytes. Returns false past the last one, and
 * at once when doc is neither an object nor an array. */
bool json_raw_next(const char *doc, size_t len, size_t *pos, const char **key, size_t *key_len,
                   const char **val, size_t *val_len);

/* The index just past the JSON value that starts at doc[i] (a string's closing quote, a
 * container's closing bracket, a number's last digit). */
size_t json_raw_value_end(const char *doc, size_t len, size_t i);

#endif
