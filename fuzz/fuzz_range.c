/* The Range header parser (http/range.c). The first 8 bytes of the input are the
 * representation's length, the rest the header value. Properties: an accepted range lies
 * within the representation and is not empty; an unsatisfiable one really is (its start is
 * past the end, or the representation or suffix is empty). */
#include <string.h>

#include "fuzz.h"
#include "http/range.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 8) return 0;
  uint64_t raw;
  memcpy(&raw, data, 8);
  int64_t total = (int64_t)(raw >> 1);
  char *h = malloc(size - 8 + 1);
  if (!h) return 0;
  memcpy(h, data + 8, size - 8);
  h[size - 8] = '\0';
  int64_t first = -1, last = -1;
  switch (http_range_parse(h, total, &first, &last)) {
    case HTTP_RANGE_OK:
      FUZZ_CHECK(first >= 0 && first <= last && last < total);
      break;
    case HTTP_RANGE_UNSATISFIABLE:
      FUZZ_CHECK(strncmp(h, "bytes=", 6) == 0);
      break;
    case HTTP_RANGE_NONE:
      break;
  }
  free(h);
  return 0;
}
