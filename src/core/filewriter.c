/* The file writer: one thread, one FIFO of copied buffers, one lock. A file counts its queued
 * buffers; when the count falls to zero the thread tells whoever asked (flush) and frees a
 * file its owner has released. */
#include "core/filewriter.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

struct item {
  struct filewriter_file *file;
  size_t len;
  struct item *next;
  unsigned char data[];
};

struct filewriter_file {
  struct filewriter *fw;
  char *dir; /* where to create the temporary file; NULL once fd is set */
  int fd;
  size_t pending; /* items queued or being written */
  bool failed;
  bool released;
  void (*done)(void *cls);
  void *done_cls;
};

struct filewriter {
  pthread_mutex_t lock;
  pthread_cond_t wake;
  pthread_t thread;
  struct item *head, *tail;
  size_t queued, max_queued;
  bool stop;
};

/* An unlinked file in dir: O_TMPFILE where the filesystem has it, else a named one unlinked
 * at once. */
int filewriter_open_temp(const char *dir) {
  int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)) return fd;
  char path[4096];
  if ((size_t)snprintf(path, sizeof path, "%s/gensendrep-XXXXXX", dir) >= sizeof path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  fd = mkostemp(path, O_CLOEXEC);
  if (fd >= 0) unlink(path);
  return fd;
}

bool filewriter_write_all(int fd, const void *data, size_t len) {
  const unsigned char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= (size_t)n;
  }
  return true;
}

static void file_free(struct filewriter_file *f) {
  if (f->fd >= 0) close(f->fd);
  free(f->dir);
  free(f);
}

/* Writer thread, lock not held: makes one write; false when it failed. Only this thread
 * writes f->fd (its owner reads it after a flush). */
static bool write_item(struct item *it) {
  struct filewriter_file *f = it->file;
  if (f->fd < 0) {
    f->fd = filewriter_open_temp(f->dir);
    if (f->fd < 0) {
      log_msg(LOG_ERROR, "no temporary file in %s: %s", f->dir, strerror(errno));
      return false;
    }
  }
  if (!filewriter_write_all(f->fd, it->data, it->len)) {
    log_msg(LOG_ERROR, "writing a temporary file: %s", strerror(errno ? errno : EIO));
    return false;
  }
  return true;
}

static void *writer_main(void *arg) {
  struct filewriter *fw = arg;
  pthread_mutex_lock(&fw->lock);
  for (;;) {
    while (!fw->head && !fw->stop) pthread_cond_wait(&fw->wake, &fw->lock);
    struct item *it = fw->head;
    if (!it) break; /* stopping, and nothing is left */
    fw->head = it->next;
    if (!fw->head) fw->tail = NULL;
    struct filewriter_file *f = it->file;
    bool skip = f->failed; /* after a failure the file is not written any more */
    pthread_mutex_unlock(&fw->lock);
    bool ok = skip || write_item(it);
    pthread_mutex_lock(&fw->lock);
    if (!ok) f->failed = true;
    fw->queued -= it->len;
    free(it);
    if (--f->pending > 0) continue;
    void (*done)(void *) = f->done;
    void *cls = f->done_cls;
    f->done = NULL;
    if (f->released) {
      file_free(f);
    } else if (done) {
      pthread_mutex_unlock(&fw->lock);
      done(cls); /* may hand the file to its owner's thread: not touched after */
      pthread_mutex_lock(&fw->lock);
    }
  }
  pthread_mutex_unlock(&fw->lock);
  return NULL;
}

struct filewriter *filewriter_new(size_t max_queued_bytes) {
  struct filewriter *fw = calloc(1, sizeof *fw);
  if (!fw) return NULL;
  fw->max_queued = max_queued_bytes;
  pthread_mutex_init(&fw->lock, NULL);
  pthread_cond_init(&fw->wake, NULL);
  if (pthread_create(&fw->thread, NULL, writer_main, fw) != 0) {
    pthread_cond_destroy(&fw->wake);
    pthread_mutex_destroy(&fw->lock);
    free(fw);
    return NULL;
  }
  pthread_setname_np(fw->thread, "gsr-log");
  return fw;
}

void filewriter_free(struct filewriter *fw) {
  if (!fw) return;
  pthread_mutex_lock(&fw->lock);
  fw->stop = true;
  pthread_cond_signal(&fw->wake);
  pthread_mutex_unlock(&fw->lock);
  pthread_join(fw->thread, NULL);
  pthread_cond_destroy(&fw->wake);
  pthread_mutex_destroy(&fw->lock);
  free(fw);
}

struct filewriter_file *filewriter_file_new(struct filewriter *fw, const char *dir, int fd) {
  struct filewriter_file *f = calloc(1, sizeof *f);
  if (!f) return NULL;
  f->fw = fw;
  f->fd = fd;
  if (fd < 0 && !(f->dir = strdup(dir))) {
    free(f);
    return NULL;
  }
  return f;
}

bool filewriter_append(struct filewriter_file *f, const void *data, size_t len) {
  struct filewriter *fw = f->fw;
  if (len == 0) return true;
  struct item *it = malloc(sizeof *it + len);
  pthread_mutex_lock(&fw->lock);
  bool ok = it && !f->failed && fw->queued + len <= fw->max_queued;
  if (ok) {
    memcpy(it->data, data, len);
    it->file = f;
    it->len = len;
    it->next = NULL;
    if (fw->tail)
      fw->tail->next = it;
    else
      fw->head = it;
    fw->tail = it;
    fw->queued += len;
    f->pending++;
    pthread_cond_signal(&fw->wake);
  } else {
    f->failed = true;
  }
  pthread_mutex_unlock(&fw->lock);
  if (!ok) free(it);
  return ok;
}

bool filewriter_flush(struct filewriter_file *f, void (*done)(void *cls), void *cls) {
  pthread_mutex_lock(&f->fw->lock);
  bool waiting = f->pending > 0;
  if (waiting) {
    f->done = done;
    f->done_cls = cls;
  }
  pthread_mutex_unlock(&f->fw->lock);
  return waiting;
}

bool filewriter_ok(const struct filewriter_file *f) {
  pthread_mutex_lock(&f->fw->lock);
  bool ok = !f->failed;
  pthread_mutex_unlock(&f->fw->lock);
  return ok;
}
int filewriter_fd(const struct filewriter_file *f) { return f->fd; }

void filewriter_file_release(struct filewriter_file *f) {
  if (!f) return;
  pthread_mutex_lock(&f->fw->lock);
  bool idle = f->pending == 0;
  f->released = true;
  f->done = NULL;
  pthread_mutex_unlock(&f->fw->lock);
  if (idle) file_free(f);
}
