/* Error table; the README's "Errors" section mirrors it. */
#include "core/errors.h"

static const struct api_error_info table[API_ERR_COUNT] = {
    [API_ERR_INVALID_JSON] = {"INVALID_JSON", 400, "Request body is not valid JSON"},
    [API_ERR_VALIDATION] = {"VALIDATION_ERROR", 400, "Request data is invalid"},
    [API_ERR_INVALID_PARAMETER] = {"INVALID_PARAMETER", 400, "A query parameter is invalid"},
    [API_ERR_BAD_REQUEST] = {"BAD_REQUEST", 400, "Malformed request"},
    [API_ERR_UNAUTHORIZED] = {"UNAUTHORIZED", 401, "Missing or invalid API key"},
    [API_ERR_FORBIDDEN] = {"FORBIDDEN", 403, "This API key lacks the scope this endpoint needs"},
    [API_ERR_NOT_FOUND] = {"NOT_FOUND", 404, "Resource not found"},
    [API_ERR_METHOD_NOT_ALLOWED] = {"METHOD_NOT_ALLOWED", 405,
                                    "Method not allowed on this resource"},
    [API_ERR_CONFLICT] = {"CONFLICT", 409,
                          "The request conflicts with the resource's current state"},
    [API_ERR_REQUEST_TIMEOUT] = {"REQUEST_TIMEOUT", 408, "Request body was not received in time"},
    [API_ERR_PAYLOAD_TOO_LARGE] = {"PAYLOAD_TOO_LARGE", 413, "Request body is too large"},
    [API_ERR_UNSUPPORTED_MEDIA_TYPE] = {"UNSUPPORTED_MEDIA_TYPE", 415,
                                        "Content-Type must be application/json"},
    [API_ERR_RANGE_NOT_SATISFIABLE] = {"RANGE_NOT_SATISFIABLE", 416,
                                       "The requested range is beyond the end of the audio"},
    [API_ERR_RATE_LIMITED] = {"RATE_LIMITED", 429, "Rate limit exceeded"},
    [API_ERR_INTERNAL] = {"INTERNAL_ERROR", 500, "Internal server error"},
    [API_ERR_NOT_IMPLEMENTED] = {"NOT_IMPLEMENTED", 501, "Not implemented"},
    [API_ERR_UNAVAILABLE] = {"SERVICE_UNAVAILABLE", 503,
                             "Service temporarily unavailable, please retry"},
};

const struct api_error_info *api_error_get(enum api_error e) {
  return &table[e < API_ERR_COUNT ? e : API_ERR_INTERNAL];
}
