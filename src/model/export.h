/* The rows of GET /api/v1/conversations/export: CSV as spreadsheets open it and NDJSON as GET
 * shows a conversation. Pure functions over a growable buffer: the endpoint streams the buffer
 * out a piece at a time and starts it again, so memory stays bounded whatever the size.
 *
 * CSV (RFC 4180): a header row, then one row per conversation, every line ended by CRLF. A
 * cell holding a comma, a double quote, CR or LF is quoted ("" inside). A text cell a
 * spreadsheet would run as a formula (one beginning with = + - @ TAB or CR, or with = + - @
 * after leading spaces, TABs, CRs or LFs, or after a double quote) is neutralised with a
 * leading apostrophe, inside the quotes when it is quoted. The bytes are UTF-8 as
 * stored; the endpoint sends a byte order mark first (EXPORT_CSV_BOM) when asked (bom=true),
 * so that Excel reads them as UTF-8. Unknown values (null in JSON) are empty cells. */
#ifndef GSR_MODEL_EXPORT_H
#define GSR_MODEL_EXPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "model/stored.h"

#define EXPORT_CSV_BOM "\xEF\xBB\xBF"

/* A growing text; ok turns false at the first allocation that fails (later adds do nothing). */
struct export_buf {
  char *p;
  size_t len, cap;
  bool ok;
};

void export_buf_init(struct export_buf *b);
void export_buf_add(struct export_buf *b, const char *s, size_t len);
void export_buf_free(struct export_buf *b);

/* One CSV cell, quoted and neutralised as above (text: a client's value; numbers and our own
 * timestamps pass neutralise false). At most 2 * len + 3 bytes. */
void export_csv_cell(struct export_buf *b, const char *s, size_t len, bool neutralise);

/* The header row: conversationId,emailId,accountId,agentId,status,failureReason,startTime,
 * endTime,duration,messageCount,processedAt,audioBytes,audioUrl (the list's fields, the audio
 * object flattened), CRLF. */
void export_csv_header(struct export_buf *b);
/* c's row in the header's order, CRLF. */
void export_csv_row(struct export_buf *b, const struct store_conversation *c);

/* c as GET /api/v1/conversations/{id} shows it (with_body: c->body must be set, and the line
 * also holds transcript, metadata and summary as received, as ?include=transcript shows it),
 * one line ended by LF. */
void export_ndjson_row(struct export_buf *b, const struct store_conversation *c, bool with_body);

#endif
