/* Unit tests for core/config: defaults, environment over .env, .env syntax, validation errors
 * that name the variable (and never show a secret), and list splitting. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"

#define SECRET "s3cr3t-value-that-must-never-be-printed"

static char env_path[64];
static struct config cfg;
static char err[512];

static void clear_env(void) {
  for (size_t i = 0; i < config_var_count; i++) unsetenv(config_vars[i].name);
}

/* Every test starts with no configuration variable set and no .env file. */
static int setup(void **state) {
  (void)state;
  clear_env();
  snprintf(env_path, sizeof env_path, "/tmp/gsr-test-env-%ld", (long)getpid());
  unlink(env_path);
  memset(&cfg, 0, sizeof cfg);
  memset(err, 0, sizeof err);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  config_free(&cfg);
  unlink(env_path);
  clear_env();
  return 0;
}

static void write_env(const char *text) {
  FILE *f = fopen(env_path, "w");
  assert_non_null(f);
  assert_int_equal(fputs(text, f) >= 0, 1);
  assert_int_equal(fclose(f), 0);
}

static bool load(void) {
  config_free(&cfg);
  memset(err, 0, sizeof err);
  return config_load(&cfg, env_path, err, sizeof err);
}

static void assert_loads(void) {
  if (!load()) fail_msg("config_load failed: %s", err);
}

/* Fails to load, with an error that names the variable and never shows the secret. */
static void assert_fails_naming(const char *name) {
  if (load()) fail_msg("config_load unexpectedly succeeded (expected an error about %s)", name);
  if (!strstr(err, name)) fail_msg("error does not name %s: %s", name, err);
  if (strstr(err, SECRET)) fail_msg("error shows the secret: %s", err);
  assert_null(strchr(err, '\n'));
}

static void test_defaults(void **state) {
  (void)state;
  setenv("API_SECRET_KEY", SECRET, 1);
  assert_loads();
  assert_string_equal(cfg.api_secret_key, SECRET);
  assert_string_equal(cfg.webhook_secret, "");
  assert_string_equal(cfg.host, "0.0.0.0");
  assert_int_equal(cfg.port, 8000);
  assert_string_equal(cfg.database_url, "sqlite:data/gensendrep.db");
  assert_int_equal(cfg.database_connect_timeout, 30);
  assert_string_equal(cfg.redis_url, "");
  assert_string_equal(cfg.cors_origins, "");
  assert_string_equal(cfg.log_level, "info");
  assert_int_equal(cfg.max_body_bytes, 5 * 1024 * 1024);
  assert_int_equal(cfg.rate_limit_webhook, 100);
  assert_int_equal(cfg.rate_limit_api, 1000);
  assert_string_equal(cfg.trusted_proxies, "");
  assert_int_equal(cfg.header_timeout, 10);
  assert_string_equal(cfg.docs_assets_url, "");
  assert_string_equal(cfg.docs_assets_dir, "");
}

/* The table itself: every default is valid, and every variable lands in its field. */
static void test_table_defaults_and_offsets(void **state) {
  (void)state;
  setenv("API_SECRET_KEY", SECRET, 1);
  assert_loads();
  for (size_t i = 0; i < config_var_count; i++) {
    const struct config_var *v = &config_vars[i];
    const char *field = (const char *)&cfg + v->offset;
    assert_true(v->offset + sizeof(long) <= sizeof cfg);
    assert_non_null(v->help);
    assert_true(strlen(v->help) > 0);
    if (v->type == CONFIG_INT) {
      long def = strtol(v->def, NULL, 10);
      assert_true(v->min <= def && def <= v->max);
      assert_int_equal(*(const long *)field, def);
    } else if (v->type == CONFIG_BOOL) {
      assert_true(strcmp(v->def, "true") == 0 || strcmp(v->def, "false") == 0);
      assert_int_equal(*(const bool *)field, strcmp(v->def, "true") == 0);
    } else if (strcmp(v->name, "API_SECRET_KEY") != 0) {
      assert_string_equal(*(char *const *)field, v->def);
    }
  }
  /* no name twice */
  for (size_t i = 0; i < config_var_count; i++)
    for (size_t j = i + 1; j < config_var_count; j++)
      assert_string_not_equal(config_vars[i].name, config_vars[j].name);
}

static void test_every_variable_from_env(void **state) {
  (void)state;
  setenv("API_SECRET_KEY", SECRET, 1);
  for (size_t i = 0; i < config_var_count; i++) {
    const struct config_var *v = &config_vars[i];
    if (v->type != CONFIG_INT) continue;
    char num[32];
    long want = v->max; /* the maximum is accepted */
    snprintf(num, sizeof num, "%ld", want);
    setenv(v->name, num, 1);
    assert_loads();
    assert_int_equal(*(const long *)((const char *)&cfg + v->offset), want);
    snprintf(num, sizeof num, "%ld", v->min); /* and so is the minimum */
    setenv(v->name, num, 1);
    assert_loads();
    assert_int_equal(*(const long *)((const char *)&cfg + v->offset), v->min);
    /* one past either end is not */
    snprintf(num, sizeof num, "%ld", v->max + 1);
    setenv(v->name, num, 1);
    assert_fails_naming(v->name);
    snprintf(num, sizeof num, "%ld", v->min - 1);
    setenv(v->name, num, 1);
    assert_fails_naming(v->name);
    unsetenv(v->name);
  }
}

static void test_env_file_used_and_env_wins(void **state) {
  (void)state;
  write_env(
      "API_SECRET_KEY=from-file\n"
      "PORT=9000\n"
      "HOST=127.0.0.1\n"
      "CORS_ORIGINS=https://a.example\n");
  setenv("PORT", "9100", 1);
  setenv("CORS_ORIGINS", "", 1); /* set but empty still wins */
  assert_loads();
  assert_int_equal(cfg.port, 9100);
  assert_string_equal(cfg.host, "127.0.0.1");
  assert_string_equal(cfg.api_secret_key, "from-file");
  assert_string_equal(cfg.cors_origins, "");
}

static void test_env_file_missing_or_null(void **state) {
  (void)state;
  setenv("API_SECRET_KEY", SECRET, 1);
  assert_loads(); /* env_path does not exist */
  config_free(&cfg);
  assert_true(config_load(&cfg, NULL, err, sizeof err));
  assert_int_equal(cfg.port, 8000);
}

static void test_env_file_syntax(void **state) {
  (void)state;
  write_env(
      "# a comment line\n"
      "\n"
      "   # an indented comment\n"
      "export API_SECRET_KEY=exported\n"
      "HOST = \"::1\"  \n"
      "CORS_ORIGINS=\"https://a.example, https://b.example\" # trailing comment\n"
      "WEBHOOK_SECRET='w#not-a-comment \\n'\n"
      "DOCS_ASSETS_URL=https://cdn.example/x#frag # comment\n"
      "DOCS_ASSETS_DIR=\"say \\\"hi\\\"\\\\ \\n\"\n"
      "TRUSTED_PROXIES=  10.0.0.1 , 10.0.0.2   \n"
      "LOG_LEVEL=debug\r\n"
      "PORT=1234\n"
      "PORT=4321\n"
      "REDIS_URL=\n"
      "UNKNOWN_VARIABLE=ignored\n");
  assert_loads();
  assert_string_equal(cfg.api_secret_key, "exported");
  assert_string_equal(cfg.host, "::1");
  assert_string_equal(cfg.cors_origins, "https://a.example, https://b.example");
  assert_string_equal(cfg.webhook_secret, "w#not-a-comment \\n");
  assert_string_equal(cfg.docs_assets_url, "https://cdn.example/x#frag");
  assert_string_equal(cfg.docs_assets_dir, "say \"hi\"\\ \n");
  assert_string_equal(cfg.trusted_proxies, "10.0.0.1 , 10.0.0.2");
  assert_string_equal(cfg.log_level, "debug");
  assert_int_equal(cfg.port, 4321); /* the last assignment wins */
  assert_string_equal(cfg.redis_url, "");
}

static void test_env_file_errors(void **state) {
  (void)state;
  setenv("API_SECRET_KEY", SECRET, 1);
  write_env("PORT=8000\nthis line has no equals sign\n");
  assert_false(load());
  assert_non_null(strstr(err, env_path));
  assert_non_null(strstr(err, "line 2"));

  write_env("HOST=\"unterminated\n");
  assert_false(load());
  assert_non_null(strstr(err, "line 1"));

  write_env("=value\n");
  assert_false(load());
  assert_non_null(strstr(err, "line 1"));

  /* a malformed secret line does not echo the secret */
  write_env("WEBHOOK_SECRET=\"" SECRET "\n");
  assert_false(load());
  assert_null(strstr(err, SECRET));
  write_env(SECRET "\n");
  assert_false(load());
  assert_null(strstr(err, SECRET));
}

static void test_bad_integers(void **state) {
  (void)state;
  setenv("API_SECRET_KEY", SECRET, 1);
  static const char *const bad_ports[] = {"abc",
                                          "0",
                                          "70000",
                                          "65536",
                                          " 80",
                                          "80 ",
                                          "",
                                          "8k",
                                          "0x50",
                                          "8.0",
                                          "-80",
                                          "1e3",
                                          "99999999999999999999999"};
  for (size_t i = 0; i < sizeof bad_ports / sizeof bad_ports[0]; i++) {
    setenv("PORT", bad_ports[i], 1);
    assert_fails_naming("PORT");
  }
  unsetenv("PORT");
  setenv("MAX_BODY_BYTES", "-5", 1);
  assert_fails_naming("MAX_BODY_BYTES");
  setenv("MAX_BODY_BYTES", "1023", 1);
  assert_fails_naming("MAX_BODY_BYTES");
  unsetenv("MAX_BODY_BYTES");
  setenv("RATE_LIMIT_WEBHOOK_PER_MINUTE", "0", 1);
  assert_fails_naming("RATE_LIMIT_WEBHOOK_PER_MINUTE");
  unsetenv("RATE_LIMIT_WEBHOOK_PER_MINUTE");
  setenv("RATE_LIMIT_API_PER_MINUTE", "many", 1);
  assert_fails_naming("RATE_LIMIT_API_PER_MINUTE");
  unsetenv("RATE_LIMIT_API_PER_MINUTE");
  static const char *const bad_header_timeouts[] = {"0", "-1", "3601", "1.5", "10s", ""};
  for (size_t i = 0; i < sizeof bad_header_timeouts / sizeof bad_header_timeouts[0]; i++) {
    setenv("HEADER_TIMEOUT_SECONDS", bad_header_timeouts[i], 1);
    assert_fails_naming("HEADER_TIMEOUT_SECONDS");
  }
  setenv("HEADER_TIMEOUT_SECONDS", "2", 1);
  assert_loads();
  assert_int_equal(cfg.header_timeout, 2);
  unsetenv("HEADER_TIMEOUT_SECONDS");
  /* the same from .env */
  write_env("PORT=abc\n");
  assert_fails_naming("PORT");
  /* good ones */
  setenv("PORT", "1", 1);
  assert_loads();
  assert_int_equal(cfg.port, 1);
  setenv("PORT", "65535", 1);
  assert_loads();
  assert_int_equal(cfg.port, 65535);
}

static void test_missing_api_key(void **state) {
  (void)state;
  assert_fails_naming("API_SECRET_KEY");
  setenv("API_SECRET_KEY", "", 1);
  assert_fails_naming("API_SECRET_KEY");
  setenv("API_SECRET_KEY", " , ,", 1);
  assert_fails_naming("API_SECRET_KEY");
  unsetenv("API_SECRET_KEY");
  write_env("API_SECRET_KEY=\n");
  assert_fails_naming("API_SECRET_KEY");
  write_env("API_SECRET_KEY=\"  \"\n");
  assert_fails_naming("API_SECRET_KEY");
  /* one real key among empty items is enough */
  setenv("API_SECRET_KEY", " ,k, ", 1);
  assert_loads();
}

static void test_secret_never_in_errors(void **state) {
  (void)state;
  setenv("API_SECRET_KEY", SECRET, 1);
  setenv("WEBHOOK_SECRET", SECRET, 1);
  setenv("LOG_LEVEL", "loud", 1);
  assert_fails_naming("LOG_LEVEL");
  unsetenv("LOG_LEVEL");
  setenv("DATABASE_URL", "mysql://user:" SECRET "@localhost/db", 1);
  assert_fails_naming("DATABASE_URL");
  unsetenv("DATABASE_URL");
  setenv("REDIS_URL", "rediss://:" SECRET "@localhost:6379", 1);
  assert_fails_naming("REDIS_URL");
  unsetenv("REDIS_URL");
  setenv("PORT", "abc", 1);
  assert_fails_naming("PORT");
}

static void test_log_level(void **state) {
  (void)state;
  setenv("API_SECRET_KEY", SECRET, 1);
  static const char *const good[] = {"debug", "info", "warning", "warn", "error", "DEBUG", "Info"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    setenv("LOG_LEVEL", good[i], 1);
    assert_loads();
  }
  static const char *const bad[] = {"verbose", "", "infos", " info", "trace"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    setenv("LOG_LEVEL", bad[i], 1);
    assert_fails_naming("LOG_LEVEL");
  }
}

static void test_database_url(void **state) {
  (void)state;
  setenv("API_SECRET_KEY", SECRET, 1);
  static const char *const good[] = {"sqlite:x.db", "sqlite:///tmp/abs.db", "sqlite:data/a b.db",
                                     "postgresql://user:pw@localhost:5432/conversations",
                                     "postgres://db.example.com/x"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    setenv("DATABASE_URL", good[i], 1);
    assert_loads();
    assert_string_equal(cfg.database_url, good[i]);
  }
  static const char *const bad[] = {"mysql://x", "x.db", "", "SQLITE", "postgresql:x", "sqlite:"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    setenv("DATABASE_URL", bad[i], 1);
    assert_fails_naming("DATABASE_URL");
  }
}

static void test_redis_url(void **state) {
  (void)state;
  setenv("API_SECRET_KEY", SECRET, 1);
  static const char *const good[] = {"", "redis://localhost", "redis://:pw@10.0.0.1:6380/2",
                                     "redis://user:pw@cache:6379"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    setenv("REDIS_URL", good[i], 1);
    assert_loads();
  }
  static const char *const bad[] = {"localhost:6379", "http://x",        "redis://",
                                    "redis://h:0",    "redis://h:99999", "redis://h/x",
                                    "redis://h:63x",  "redis://h/-1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    setenv("REDIS_URL", bad[i], 1);
    assert_fails_naming("REDIS_URL");
  }
}

/* QUEUE_URL (and QUEUE_STREAM with Redis) are checked with the configuration: a typo stopped
 * start-up only once the publisher was made, after the database had been migrated (exit 1). */
static void test_queue_url(void **state) {
  (void)state;
  setenv("API_SECRET_KEY", SECRET, 1);
  static const char *const good[] = {"",
                                     "redis://localhost",
                                     "redis://:pw@10.0.0.1:6380/2",
                                     "nats://localhost",
                                     "nats://u:pw@nats:4222",
                                     "nats://token@h:1/"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    setenv("QUEUE_URL", good[i], 1);
    assert_loads();
  }
  static const char *const bad[] = {"amqp://x",
                                    "redis://",
                                    "redis://h:99999",
                                    "redis://h:1/abc",
                                    "nats://",
                                    "nats://h:0",
                                    "nats://u:p@h:1/x",
                                    "nats://h:4222/sub",
                                    "nats://@h",
                                    "redis://:" SECRET "@h:0",
                                    "nats://u:" SECRET "@h:0",
                                    "nats://" SECRET "@h:1/x"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    setenv("QUEUE_URL", bad[i], 1);
    assert_fails_naming("QUEUE_URL");
  }
  setenv("QUEUE_URL", "redis://localhost", 1);
  setenv("QUEUE_STREAM", "", 1);
  assert_fails_naming("QUEUE_STREAM");
  char longer[300];
  memset(longer, 's', sizeof longer - 1);
  longer[sizeof longer - 1] = '\0';
  setenv("QUEUE_STREAM", longer, 1);
  assert_fails_naming("QUEUE_STREAM");
  setenv("QUEUE_URL", "nats://localhost", 1); /* the stream is Redis's */
  assert_loads();
  unsetenv("QUEUE_URL");
  unsetenv("QUEUE_STREAM");
}

/* More keys than the server can hold was a silent drop of the rest; now a configuration error. */
static void test_too_many_api_keys(void **state) {
  (void)state;
  char keys[(CONFIG_API_KEYS_MAX + 1) * 8 + 1] = "";
  size_t off = 0;
  for (int i = 0; i < CONFIG_API_KEYS_MAX; i++)
    off += (size_t)snprintf(keys + off, sizeof keys - off, "%sk%d", i ? ", " : "", i);
  setenv("API_SECRET_KEY", keys, 1);
  assert_loads();
  snprintf(keys + off, sizeof keys - off, ",kx");
  setenv("API_SECRET_KEY", keys, 1);
  assert_fails_naming("API_SECRET_KEY");
  assert_null(strstr(err, "k31"));
}

static void test_split_list(void **state) {
  (void)state;
  char *items[8];
  char a[] = " a, b ,,c , ";
  assert_int_equal(config_split_list(a, items, 8), 3);
  assert_string_equal(items[0], "a");
  assert_string_equal(items[1], "b");
  assert_string_equal(items[2], "c");

  char b[] = "";
  assert_int_equal(config_split_list(b, items, 8), 0);
  char c[] = " , ,\t,";
  assert_int_equal(config_split_list(c, items, 8), 0);
  char d[] = "one";
  assert_int_equal(config_split_list(d, items, 8), 1);
  assert_string_equal(items[0], "one");
  char e[] = "\thttps://a.example ,https://b.example\t";
  assert_int_equal(config_split_list(e, items, 8), 2);
  assert_string_equal(items[0], "https://a.example");
  assert_string_equal(items[1], "https://b.example");
  char f[] = "x y, z";
  assert_int_equal(config_split_list(f, items, 8), 2);
  assert_string_equal(items[0], "x y"); /* inner spaces stay */
  /* at most max items */
  char g[] = "1,2,3,4";
  assert_int_equal(config_split_list(g, items, 2), 2);
  assert_string_equal(items[0], "1");
  assert_string_equal(items[1], "2");
  char h[] = "1,2";
  assert_int_equal(config_split_list(h, items, 0), 0);
}

static void test_help_and_markdown_list_every_variable(void **state) {
  (void)state;
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  config_print_help(f);
  config_print_markdown(f);
  assert_int_equal(fclose(f), 0);
  for (size_t i = 0; i < config_var_count; i++) {
    char needle[80];
    snprintf(needle, sizeof needle, "| `%s` |", config_vars[i].name);
    if (!strstr(buf, needle)) {
      free(buf);
      fail_msg("markdown table lacks %s", config_vars[i].name);
    }
  }
  free(buf);
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_defaults),
      T(test_table_defaults_and_offsets),
      T(test_every_variable_from_env),
      T(test_env_file_used_and_env_wins),
      T(test_env_file_missing_or_null),
      T(test_env_file_syntax),
      T(test_env_file_errors),
      T(test_bad_integers),
      T(test_missing_api_key),
      T(test_secret_never_in_errors),
      T(test_log_level),
      T(test_database_url),
      T(test_redis_url),
      T(test_queue_url),
      T(test_too_many_api_keys),
      T(test_split_list),
      T(test_help_and_markdown_list_every_variable),
  };
#undef T
  return cmocka_run_group_tests(tests, NULL, NULL);
}
