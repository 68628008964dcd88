/* The API's error vocabulary: one table of code, HTTP status and default message. */
#ifndef GSR_ERRORS_H
#define GSR_ERRORS_H

enum api_error {
  API_ERR_INVALID_JSON,
  API_ERR_VALIDATION,
  API_ERR_INVALID_PARAMETER,
  API_ERR_BAD_REQUEST,
  API_ERR_UNAUTHORIZED,
  API_ERR_FORBIDDEN,
  API_ERR_NOT_FOUND,
  API_ERR_METHOD_NOT_ALLOWED,
  API_ERR_CONFLICT,
  API_ERR_REQUEST_TIMEOUT,
  API_ERR_PAYLOAD_TOO_LARGE,
  API_ERR_UNSUPPORTED_MEDIA_TYPE,
  API_ERR_RANGE_NOT_SATISFIABLE,
  API_ERR_RATE_LIMITED,
  API_ERR_INTERNAL,
  API_ERR_NOT_IMPLEMENTED,
  API_ERR_UNAVAILABLE,
  API_ERR_COUNT
};

struct api_error_info {
  const char *code;
  unsigned status;
  const char *message;
};

const struct api_error_info *api_error_get(enum api_error e);

#endif
