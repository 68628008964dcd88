/* Request framing and raw-byte checks libmicrohttpd 0.9.75 leaves to the application: how the
 * body is delimited (RFC 9112 §6) and NUL bytes in the method and header lines. */
#ifndef GSR_FRAMING_H
#define GSR_FRAMING_H

#include <microhttpd.h>
#include <stdbool.h>

#include "core/errors.h"

struct framing_problem {
  enum api_error error; /* API_ERR_BAD_REQUEST or API_ERR_NOT_IMPLEMENTED */
  const char *message;  /* static text */
};

/* Call in the first access-handler call (the headers are complete then), with MHD's method,
 * url and version. False, with *problem set, when the request must be refused: answer it at
 * once and close the connection, since its body cannot be framed safely. */
__attribute__((warn_unused_result)) bool framing_check(struct MHD_Connection *conn,
                                                       const char *method, const char *url,
                                                       const char *version,
                                                       struct framing_problem *problem);

#endif
