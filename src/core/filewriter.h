/* A thread that makes file writes for threads that must not wait on a disk (libmicrohttpd's
 * event threads): they hand it bytes and are told when everything they handed is in the file.
 * The writes to one file are made in order. What may wait to be written is bounded for all
 * files together: past the bound a file's further bytes are refused and the file is failed. */
#ifndef GSR_FILEWRITER_H
#define GSR_FILEWRITER_H

#include <stdbool.h>
#include <stddef.h>

struct filewriter;
struct filewriter_file;

/* NULL when the thread or memory could not be had. */
__attribute__((warn_unused_result)) struct filewriter *filewriter_new(size_t max_queued_bytes);
/* Stops the thread; every file must have been released. */
void filewriter_free(struct filewriter *fw);

/* A new file. fd >= 0: that descriptor (owned from now on); else an unlinked temporary file
 * in dir, created by the writer thread before the first write. NULL when out of memory. */
struct filewriter_file *filewriter_file_new(struct filewriter *fw, const char *dir, int fd);
/* Queues a copy of len bytes. False (the file is then failed) when the writer's bound is
 * reached, memory runs out, or an earlier write to the file failed. */
bool filewriter_append(struct filewriter_file *f, const void *data, size_t len);
/* When writes of f are still to be made: returns true, and done(cls) is called on the writer
 * thread once they all are. Otherwise returns false and done is never called. */
bool filewriter_flush(struct filewriter_file *f, void (*done)(void *cls), void *cls);
/* After the last flush: whether every byte appended is in the file. */
bool filewriter_ok(const struct filewriter_file *f);
/* After the last flush: the file's descriptor (-1 when nothing was ever written). */
int filewriter_fd(const struct filewriter_file *f);
/* The caller is done with f: it is closed and freed once its pending writes are made. */
void filewriter_file_release(struct filewriter_file *f);

/* The two file operations it is made of, for threads that may wait (offload threads):
 * an unlinked temporary file in dir (-1, errno set, on failure), and a whole write. */
int filewriter_open_temp(const char *dir);
bool filewriter_write_all(int fd, const void *data, size_t len);

#endif
