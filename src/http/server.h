/* The HTTP server: libmicrohttpd daemon, per-request lifecycle, limits and shutdown. */
#ifndef GSR_SERVER_H
#define GSR_SERVER_H

#include <stdbool.h>

#include "core/config.h"

struct http_server;

struct redis_client;

/* Starts listening; app is handed to every handler; with redis (not owned), rate limits are
 * shared through it. NULL with err set on failure. */
__attribute__((warn_unused_result)) struct http_server *http_server_start(
    const struct config *cfg, void *app, struct redis_client *redis, char *err, size_t errlen);
/* Stops accepting, lets in-flight requests finish (up to grace_ms), waits for every request
 * parked on the store, then stops. False (nothing freed) when the store never answered. */
__attribute__((warn_unused_result)) bool http_server_stop(struct http_server *s, unsigned grace_ms);
unsigned http_server_port(const struct http_server *s);

#endif
