/* The .env reader (core/config.c), through config_load as the program uses it: the input is
 * written to a private file that config_load reads with no configuration variable set in the
 * environment. Properties: loading is deterministic; a success yields every integer within
 * its table range and every string set; a failure names the problem in err. */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);

static char path[64];

static void remove_file(void) { unlink(path); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  for (size_t i = 0; i < config_var_count; i++) unsetenv(config_vars[i].name);
  const char *dir = getenv("TMPDIR");
  snprintf(path, sizeof path, "%s/gsr-fuzz-env-XXXXXX", dir && strlen(dir) < 32 ? dir : "/tmp");
  int fd = mkstemp(path);
  if (fd < 0) abort();
  close(fd);
  atexit(remove_file);
  return 0;
}

static bool load(struct config *cfg, char *err, size_t errlen) {
  memset(err, 0x5a, errlen);
  err[0] = '\0';
  bool ok = config_load(cfg, path, err, errlen);
  FUZZ_CHECK(memchr(err, '\0', errlen) != NULL);
  return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  if (size && fwrite(data, 1, size, f) != size) abort();
  fclose(f);
  struct config a, b;
  char err_a[512], err_b[512];
  bool ok_a = load(&a, err_a, sizeof err_a);
  bool ok_b = load(&b, err_b, sizeof err_b);
  FUZZ_CHECK(ok_a == ok_b);
  if (ok_a) {
    for (size_t i = 0; i < config_var_count; i++) {
      const struct config_var *v = &config_vars[i];
      if (v->type == CONFIG_INT) {
        long n = *(const long *)((const char *)&a + v->offset);
        FUZZ_CHECK(n >= v->min && n <= v->max);
        FUZZ_CHECK(n == *(const long *)((const char *)&b + v->offset));
      } else if (v->type == CONFIG_BOOL) {
        FUZZ_CHECK(*(const bool *)((const char *)&a + v->offset) ==
                   *(const bool *)((const char *)&b + v->offset));
      } else {
        const char *s = *(char *const *)((const char *)&a + v->offset);
        FUZZ_CHECK(s != NULL);
        FUZZ_CHECK(strcmp(s, *(char *const *)((const char *)&b + v->offset)) == 0);
      }
    }
  } else {
    FUZZ_CHECK(err_a[0] != '\0');
    FUZZ_CHECK(strcmp(err_a, err_b) == 0);
  }
  config_free(&a);
  config_free(&b);
  return 0;
}
