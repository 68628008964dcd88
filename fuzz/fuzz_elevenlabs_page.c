/* The ElevenLabs API's answers as the backfill reads them (elevenlabs/page.c): a conversations
 * page and the reason in an error answer. A page that parses has an item per array element,
 * ids that are non-empty strings when set, and a next cursor exactly when more is announced;
 * the error reason is printable ASCII within its bound, whatever the bytes. */
#include <string.h>

#include "elevenlabs/elevenlabs.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *doc = malloc(size ? size : 1);
  if (!doc) return 0;
  memcpy(doc, data, size);
  struct el_page page;
  if (el_page_parse(doc, size, &page)) {
    FUZZ_CHECK(page.root != NULL);
    FUZZ_CHECK((page.count == 0) == (page.items == NULL));
    for (size_t i = 0; i < page.count; i++) {
      const struct el_page_item *it = &page.items[i];
      FUZZ_CHECK(!it->conversation_id || it->conversation_id[0] != '\0');
      FUZZ_CHECK(it->has_start || it->start_unix == 0);
    }
    FUZZ_CHECK(page.has_more == (page.next_cursor != NULL));
    FUZZ_CHECK(!page.next_cursor || page.next_cursor[0] != '\0');
    el_page_free(&page);
  } else {
    FUZZ_CHECK(page.root == NULL && page.items == NULL && page.count == 0);
  }
  size_t caps[] = {1, 7, 256};
  for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
    char out[256];
    memset(out, 'x', sizeof out);
    el_api_error_detail(doc, size, out, caps[c]);
    size_t n = strnlen(out, caps[c]);
    FUZZ_CHECK(n < caps[c] && n <= 200);
    for (size_t i = 0; i < n; i++) FUZZ_CHECK(out[i] >= 0x20 && out[i] < 0x7f);
  }
  free(doc);
  return 0;
}
