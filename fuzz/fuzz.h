/* Shared by the libFuzzer targets: the entry point's prototype and a loud invariant check.
 * Every target also checks properties of what the parser returns, not only that it does not
 * crash: a broken property aborts, and libFuzzer saves the input as a crash. */
#ifndef GSR_FUZZ_H
#define GSR_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                            \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                      \
    }                                                                               \
  } while (0)

#endif
