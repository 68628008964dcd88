/* Syntax of the connection URLs in the configuration (DATABASE_URL, REDIS_URL, QUEUE_URL). Only
 * text is checked here: no client is made and nothing is connected, so core/ needs no store or
 * adapter to validate the configuration, and the adapters parse with the same rules. */
#ifndef GSR_DSN_H
#define GSR_DSN_H

#include <stdbool.h>
#include <stddef.h>

/* True for postgresql:// and postgres:// URLs. */
bool dsn_is_postgres(const char *url);
/* The file path of a sqlite:PATH or sqlite://PATH URL ("" when there is none), or NULL when url
 * is not a sqlite: URL. sqlite:PATH keeps PATH as written (relative to the working directory);
 * sqlite://PATH drops the "//" as in file URLs, so sqlite:///var/lib/x.db is absolute. */
const char *dsn_sqlite_path(const char *url);

struct dsn_redis {
  char host[256];
  int port; /* 6379 when not given */
  char user[128];
  char password[256];
  int db; /* 0 when not given */
};

/* Parses redis://[[user]:password@]host[:port][/db]. On failure writes one line naming the
 * variable var (never the password) to err. out may hold a password: clear it after use. */
__attribute__((warn_unused_result)) bool dsn_parse_redis(const char *var, const char *url,
                                                         struct dsn_redis *out, char *err,
                                                         size_t errlen);

struct dsn_nats {
  char host[254];
  int port; /* 4222 when not given */
  char user[128];
  char password[256];
  char token[256];
};

/* Parses nats://[user:password@|token@]host[:port][/]. On failure writes one line naming
 * QUEUE_URL (never a credential) to err. out may hold credentials: clear it after use. */
__attribute__((warn_unused_result)) bool dsn_parse_nats(const char *url, struct dsn_nats *out,
                                                        char *err, size_t errlen);

#endif
