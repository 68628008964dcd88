/* The one place the service version lives: health, --version and OpenAPI agree on it. */
#ifndef GSR_VERSION_H
#define GSR_VERSION_H
#define GSR_VERSION "1.0.0"
#endif
