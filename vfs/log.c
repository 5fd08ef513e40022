/*
** log.c: where the library's messages go. LITESTREAM_LOG_FILE (appended) or
** stderr, filtered by LITESTREAM_LOG_LEVEL (debug, info, warn, error; the
** default is warn), the Go VFS's names. Errors also go to sqlite3_log.
**
** Locks: g_log_mutex guards the configuration only (the path and the
** descriptors), for a few instructions; it is never held while a line is
** formatted or written, and the log file is opened by vfs_log_configure
** (at each open of a replica, so a rotated file is picked up), never per
** line. A line is one write(2) to an O_APPEND descriptor, so the lines of
** several threads and processes do not interleave. The descriptor replaced
** by a reconfiguration is closed only at the next one: a writer that loaded
** it just before still writes to an open file.
*/
#include "config.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT3

#include "vfs/vfs.h"

static pthread_mutex_t g_log_mutex = PTHREAD_MUTEX_INITIALIZER;
static atomic_int g_log_level = REPLICA_LOG_WARN;
static atomic_int g_log_fd = -1;  /* -1: stderr */
static char g_log_path[1024];     /* g_log_mutex */
static int g_log_fd_retired = -1; /* g_log_mutex */

static const char *const kLevelName[] = {"DEBUG", "INFO", "WARN", "ERROR"};

/* Whether fd is still the file at path (not rotated away or deleted). */
static int same_file_at(int fd, const char *path) {
  struct stat a, b;
  return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

void vfs_log_configure(void) {
  const char *path = getenv("LITESTREAM_LOG_FILE");
  int fd = -1, keep;
  atomic_store(&g_log_level, vfs_log_level_env());
  if (path == NULL) path = "";
  pthread_mutex_lock(&g_log_mutex);
  keep = strcmp(path, g_log_path) == 0 &&
         (path[0] == '\0' || same_file_at(atomic_load(&g_log_fd), path));
  pthread_mutex_unlock(&g_log_mutex);
  if (keep) return;
  if (path[0] != '\0') fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  pthread_mutex_lock(&g_log_mutex);
  if (g_log_fd_retired >= 0) close(g_log_fd_retired);
  g_log_fd_retired = atomic_exchange(&g_log_fd, fd);
  snprintf(g_log_path, sizeof(g_log_path), "%s", fd >= 0 ? path : "");
  pthread_mutex_unlock(&g_log_mutex);
}

void vfs_log(int level, const char *msg) {
  char ts[LTX_TIME_CAP], line[1400];
  struct timespec now;
  int fd, n;
  if (level >= REPLICA_LOG_ERROR) sqlite3_log(SQLITE_IOERR, "ltvfs: %s", msg);
  if (level < atomic_load(&g_log_level)) return;
  clock_gettime(CLOCK_REALTIME, &now);
  ltx_time_format((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, ts, sizeof(ts));
  n = snprintf(line, sizeof(line), "%s %s ltvfs: %s\n", ts,
               kLevelName[level < REPLICA_LOG_DEBUG ? 0 : level > REPLICA_LOG_ERROR ? 3 : level],
               msg);
  if (n < 0) return;
  if ((size_t)n >= sizeof(line)) {
    n = (int)sizeof(line) - 1;
    line[n - 1] = '\n';
  }
  fd = atomic_load(&g_log_fd);
  if (fd < 0) fd = STDERR_FILENO;
  if (write(fd, line, (size_t)n) < 0) { /* nowhere left to say so */
  }
}

void vfs_logf(int level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  vfs_log(level, msg);
}
