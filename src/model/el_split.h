/* Streaming split of an ElevenLabs event body as it arrives: everything except the contents of
 * the string data.full_audio (the "envelope", kept in memory, bounded) and, separately, those
 * contents base64-decoded and handed to a sink chunk by chunk. So a 100 MB post_call_audio
 * event never sits in memory: the envelope is a few hundred bytes, the audio goes to a file.
 *
 * The splitter tracks JSON structure only as far as it needs to find data.full_audio at the
 * top level's "data" member; it does not validate the JSON (parse the envelope afterwards).
 * Inside full_audio it accepts the base64 alphabet, '=' padding, and the JSON escape "\/"
 * (anything else there is EL_SPLIT_BAD_AUDIO). For an event without full_audio the envelope is
 * the body byte for byte. */
#ifndef GSR_MODEL_EL_SPLIT_H
#define GSR_MODEL_EL_SPLIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum el_split_status {
  EL_SPLIT_OK,
  EL_SPLIT_TOO_LARGE,   /* the envelope passed envelope_max */
  EL_SPLIT_BAD_AUDIO,   /* full_audio is not base64 (or appears twice) */
  EL_SPLIT_SINK_FAILED, /* the sink returned false */
  EL_SPLIT_NO_MEMORY,
};

/* Receives decoded audio bytes; false stops the split (EL_SPLIT_SINK_FAILED). */
typedef bool (*el_split_sink)(void *cls, const unsigned char *bytes, size_t len);

struct el_split;

struct el_split *el_split_new(size_t envelope_max, el_split_sink sink, void *cls);
/* Feeds the next bytes of the body. After a non-OK status, later calls return it again. */
enum el_split_status el_split_feed(struct el_split *sp, const char *data, size_t len);
/* The body is complete: checks the base64 ends properly (padding, no stray bits). */
enum el_split_status el_split_finish(struct el_split *sp);
/* The envelope: the body with full_audio's contents cut out ("full_audio":""). Valid until
 * el_split_free; NUL-terminated. */
const char *el_split_envelope(const struct el_split *sp, size_t *len);
bool el_split_has_audio(const struct el_split *sp);    /* a data.full_audio string was seen */
int64_t el_split_audio_len(const struct el_split *sp); /* decoded bytes */
/* Offset in the envelope just after full_audio's opening quote, where its contents were cut;
 * -1 without audio. */
int64_t el_split_audio_at(const struct el_split *sp);
/* True when the cut contents were exactly the canonical base64 of the decoded bytes (standard
 * alphabet, padded, no escapes): then envelope[0:at] + base64(audio) + envelope[at:] is the
 * body byte for byte. */
bool el_split_canonical(const struct el_split *sp);
void el_split_free(struct el_split *sp);

/* Canonical base64 (standard alphabet, padded) of len bytes: the encoded length. */
size_t el_base64_len(size_t len);
/* Encodes into out (el_base64_len(len) bytes, no NUL). */
void el_base64_encode(const unsigned char *in, size_t len, char *out);

#endif
