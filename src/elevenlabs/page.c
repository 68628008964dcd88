/* The parts of the ElevenLabs API's answers the client reads: a conversations page and the
 * reason in an error answer. Both come from the network: nothing is trusted. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "elevenlabs/elevenlabs.h"

bool el_page_parse(const char *body, size_t len, struct el_page *out) {
  *out = (struct el_page){0};
  json_t *root = json_loadb(body ? body : "", body ? len : 0, 0, NULL);
  json_t *items = json_object_get(root, "conversations");
  if (!json_is_array(items)) {
    json_decref(root);
    return false;
  }
  size_t n = json_array_size(items);
  out->items = n ? calloc(n, sizeof *out->items) : NULL;
  if (n && !out->items) {
    json_decref(root);
    return false;
  }
  out->root = root;
  out->count = n;
  for (size_t i = 0; i < n; i++) {
    json_t *item = json_array_get(items, i);
    struct el_page_item *it = &out->items[i];
    const char *id = json_string_value(json_object_get(item, "conversation_id"));
    it->conversation_id = id && *id ? id : NULL;
    it->status = json_string_value(json_object_get(item, "status"));
    json_t *start = json_object_get(item, "start_time_unix_secs");
    it->has_start = json_is_integer(start);
    it->start_unix = it->has_start ? (int64_t)json_integer_value(start) : 0;
  }
  const char *next = json_string_value(json_object_get(root, "next_cursor"));
  out->has_more = json_is_true(json_object_get(root, "has_more")) && next && *next;
  out->next_cursor = out->has_more ? next : NULL;
  return true;
}

void el_page_free(struct el_page *p) {
  json_decref(p->root);
  free(p->items);
  *p = (struct el_page){0};
}

void el_api_error_detail(const char *body, size_t len, char *out, size_t cap) {
  if (cap == 0) return;
  out[0] = '\0';
  json_t *root = json_loadb(body ? body : "", body ? len : 0, 0, NULL);
  json_t *d = json_object_get(root, "detail");
  const char *msg =
      json_is_string(d) ? json_string_value(d) : json_string_value(json_object_get(d, "message"));
  if (msg) {
    size_t j = 0;
    for (size_t i = 0; msg[i] && j + 1 < cap && i < 200; i++)
      out[j++] = (unsigned char)msg[i] >= 0x20 && (unsigned char)msg[i] < 0x7f ? msg[i] : '?';
    out[j] = '\0';
  }
  json_decref(root);
}
