/* Configuration: one table of variables drives parsing, validation, --help and the README table. */
#ifndef GSR_CONFIG_H
#define GSR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Most keys API_SECRET_KEY may list (enough for any rotation). */
#define CONFIG_API_KEYS_MAX 32
/* Most attempts DELIVERY_RETRY_SCHEDULE may list. */
#define CONFIG_RETRY_MAX 32
/* QUEUE_STREAM's longest value, in bytes */
#define CONFIG_QUEUE_STREAM_MAX 255

struct config {
  char *api_secret_key; /* comma-separated keys */
  char *webhook_secret;
  bool webhook_signature_required;
  char *elevenlabs_webhook_secret;
  long elevenlabs_webhook_tolerance;
  long rate_limit_elevenlabs;
  char *elevenlabs_email_variable;
  char *elevenlabs_account_variable;
  long elevenlabs_audio_max_bytes;
  bool elevenlabs_store_audio;
  char *elevenlabs_api_key;
  char *elevenlabs_api_url;
  long elevenlabs_health_interval;
  char *host;
  long port;
  char *database_url;
  long database_connect_timeout;
  char *redis_url;
  char *cors_origins;
  char *log_level;
  long max_body_bytes;
  long rate_limit_webhook;
  long rate_limit_api;
  char *trusted_proxies;
  long max_connections;
  long max_connections_per_ip;
  long connection_timeout;
  long request_timeout;
  long header_timeout;
  long threads;
  long offload_threads;
  long offload_queue;
  char *tls_cert_file;
  char *tls_key_file;
  char *retention_days_text; /* RETENTION_DAYS as given */
  long retention_days;       /* parsed; 0: keep forever */
  char *encryption_keys;     /* ENCRYPTION_KEYS as given (seal/seal.h parses it) */
  /* onward delivery (issue 10) */
  char *queue_url; /* "" none, redis://... or nats://... */
  char *queue_stream;
  long queue_maxlen;
  char *delivery_retry_schedule_text;    /* DELIVERY_RETRY_SCHEDULE as given */
  long delivery_retry[CONFIG_RETRY_MAX]; /* parsed: seconds before attempt i+1 */
  size_t delivery_retry_count;           /* attempts before an event is dead-lettered */
  bool delivery_allow_private_networks;
  long delivery_timeout;
  long delivery_concurrency;
  long outbox_retention_days;
  char *docs_assets_url;
  char *docs_assets_dir;
  char *metrics_token; /* "" : GET /metrics needs no token */
};

enum config_type { CONFIG_STRING, CONFIG_SECRET, CONFIG_INT, CONFIG_BOOL };

struct config_var {
  const char *name;
  enum config_type type;
  const char *def; /* default as text; "" means empty/unset */
  long min, max;   /* CONFIG_INT only */
  size_t offset;   /* into struct config */
  const char *help;
};

extern const struct config_var config_vars[];
extern const size_t config_var_count;

/* Fills cfg from the environment, then env_file (may be NULL or missing), then defaults.
 * On failure writes one line naming the variable into err and returns false; cfg is then
 * left for config_free. Secret values are never written into err. */
__attribute__((warn_unused_result)) bool config_load(struct config *cfg, const char *env_file,
                                                     char *err, size_t errlen);
void config_free(struct config *cfg);

/* The variable list for --help, and as a Markdown table for the README. */
void config_print_help(FILE *out);
void config_print_markdown(FILE *out);

/* Splits a comma-separated list into trimmed, non-empty items. Returns the number found (at
 * most max); items point into buf, which is modified. */
size_t config_split_list(char *buf, char **items, size_t max);

#endif
