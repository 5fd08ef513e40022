/*
** file.c: the file:// backend, a replica in a local (or mounted) directory.
**
** Keys are relative paths under the root directory, so the replica layout
** is Litestream's own file layout (docs/replica-layout.md): ROOT/ltx/0/<name>.
**
** What each operation does on disk:
**
**   list(prefix)   walks the directory that holds the prefix (and below it,
**                  as an S3 listing without delimiter would), sorted by key.
**                  A missing subdirectory is an empty list; a missing root
**                  is STORE_ERR_NOT_FOUND ("replica directory ... does not
**                  exist"), because a restore from a mistyped path must say
**                  so instead of reporting an empty replica.
**   read_range     open + pread; a short object is STORE_ERR_SHORT_READ.
**   read_range_sink  the same open, 256 KiB read and told at a time.
**   put            write ".<name>.tmp.<pid>.<n>" in the target directory
**                  (O_EXCL), fsync, set the mtime, rename over the key, fsync
**                  the directory. Readers see the old or the whole new file.
**                  Directories are created as needed (mkdir -p).
**   put IF_ABSENT  renameat2(RENAME_NOREPLACE), or link()+unlink() where the
**                  filesystem lacks it: both fail with EEXIST atomically.
**   put IF_MATCH   compare the current etag, then rename, while holding an
**                  flock() on "<dir>/.ltvfs.lock".
**   del            unlink; a missing file is fine.
**
** Dot-prefixed names (temporary files, the lock file) are never listed.
**
** Etags are "<inode>-<size>-<mtime ns>-<ctime ns>" in hex. Every put makes
** a new inode and rename/link update the ctime, so a replaced file gets a new
** etag. Not done: content hashing (head would read whole files).
**
** Known limits, stated honestly:
**  - The compare-and-swap is atomic only among writers that use conditional
**    puts through this backend (they all take the lock). An unconditional
**    put or a delete by anyone else can interleave, as it could on S3 where
**    it would simply win or lose the race.
**  - An etag can repeat (ABA) only if the filesystem reuses a freed inode for
**    a file of the same size, mtime and ctime; with ns timestamps this needs
**    two replacements within one timestamp tick.
**  - flock() over NFS is whatever the client emulates (fcntl locks on Linux).
*/
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"

/* Deepest directory nesting a listing descends into; guards against
** symlink loops. The replica layout itself is two levels deep. */
#define FILE_LIST_MAX_DEPTH 16
/* Name of the lock file that serialises conditional puts in a directory. */
#define FILE_LOCK_NAME ".ltvfs.lock"

typedef struct file_store {
  char *root; /* root directory, no trailing '/' (unless it is "/") */
} file_store;

/* Makes temporary names unique between threads of one process; the pid
** makes them unique between processes, O_EXCL catches what is left. */
static atomic_ulong tmp_seq;

static file_store *file_of(store *st) { return (file_store *)st->impl; }

/* Records a failed system call on path. ENOENT becomes NOT_FOUND so callers
** can tell "absent" from "broken". strerror is thread-safe in glibc >= 2.32
** and musl. */
static int errno_error(ltx_error *err, int e, const char *what, const char *path) {
  int code = (e == ENOENT) ? STORE_ERR_NOT_FOUND : (e == ENOMEM ? LTX_ERR_NOMEM : STORE_ERR_IO);
  return ltx_error_set(err, code, "%s %s: %s", what, path, strerror(e));
}

/* A key is a relative path of non-empty components, none "." or "..":
** it can never name anything outside the root. A list prefix may also be
** empty or end in '/', and its last component is a name prefix, not a path. */
static int check_key(const char *key, int is_prefix, ltx_error *err) {
  const char *z = key;

  if (key == NULL || (key[0] == '\0' && !is_prefix)) {
    return ltx_error_set(err, LTX_ERR_ARG, "empty object key");
  }
  if (key[0] == '/') {
    return ltx_error_set(err, LTX_ERR_ARG, "object key '%s' must be relative", key);
  }
  while (*z != '\0') {
    size_t n = strcspn(z, "/");
    int last = z[n] == '\0';
    int dots = (n == 1 && z[0] == '.') || (n == 2 && z[0] == '.' && z[1] == '.');
    if ((!last && (n == 0 || dots)) || (last && !is_prefix && dots)) {
      return ltx_error_set(err, LTX_ERR_ARG, "object key '%s' is not a clean relative path",
                           key);
    }
    if (last) break;
    z += n + 1;
    if (*z == '\0' && !is_prefix) {
      return ltx_error_set(err, LTX_ERR_ARG, "object key '%s' ends in '/'", key);
    }
  }
  return LTX_OK;
}

/* "root/rel" (or "root" when rel is empty) in a new string. */
static char *join_path(const char *root, const char *rel, size_t rel_len) {
  size_t root_len = strlen(root);
  size_t slash = (root_len > 0 && root[root_len - 1] != '/' && rel_len > 0) ? 1 : 0;
  char *z = malloc(root_len + slash + rel_len + 1);
  if (z == NULL) return NULL;
  memcpy(z, root, root_len);
  if (slash) z[root_len] = '/';
  memcpy(z + root_len + slash, rel, rel_len);
  z[root_len + slash + rel_len] = '\0';
  return z;
}

static int64_t timespec_ms(const struct timespec *ts) {
  /* tv_nsec is never negative, so this rounds down before 1970 too */
  return (int64_t)ts->tv_sec * 1000 + ts->tv_nsec / 1000000;
}

static int64_t timespec_ns(const struct timespec *ts) {
  return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static int format_etag(const struct stat *s, char *etag, size_t cap, ltx_error *err) {
  int n = snprintf(etag, cap, "%llx-%llx-%llx-%llx", (unsigned long long)s->st_ino,
                   (unsigned long long)s->st_size, (unsigned long long)timespec_ns(&s->st_mtim),
                   (unsigned long long)timespec_ns(&s->st_ctim));
  if (n < 0 || (size_t)n >= cap) {
    return ltx_error_set(err, LTX_ERR_ARG, "etag buffer of %zu bytes is too small (use %d)", cap,
                         STORE_ETAG_CAP);
  }
  return LTX_OK;
}

/* ---- list ---- */

typedef struct obj_vec {
  store_object *items;
  size_t n, cap;
} obj_vec;

static int obj_vec_push(obj_vec *v, char *key, const struct stat *s, ltx_error *err) {
  if (v->n == v->cap) {
    size_t new_cap = v->cap ? v->cap * 2 : 64;
    store_object *grown = realloc(v->items, new_cap * sizeof(*grown));
    if (grown == NULL) {
      free(key);
      return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory listing objects");
    }
    v->items = grown;
    v->cap = new_cap;
  }
  v->items[v->n].key = key;
  v->items[v->n].size = (uint64_t)s->st_size;
  v->items[v->n].mtime_ms = timespec_ms(&s->st_mtim);
  v->n++;
  return LTX_OK;
}

static int cmp_object_key(const void *a, const void *b) {
  return strcmp(((const store_object *)a)->key, ((const store_object *)b)->key);
}

/* Adds the files under directory path (whose key prefix is key_dir, "" or
** ending in '/') whose names start with name, and everything below the
** subdirectories that do. */
static int list_dir(const char *path, const char *key_dir, const char *name, const char *after,
                    int depth, obj_vec *v, ltx_error *err) {
  DIR *d = NULL;
  struct dirent *e;
  char *key = NULL;
  size_t key_dir_len = strlen(key_dir), name_len = strlen(name);
  int rc = LTX_OK;

  d = opendir(path);
  if (d == NULL) {
    /* vanished between readdir and here: another process deleted it */
    if (depth > 0 && errno == ENOENT) goto out;
    rc = errno_error(err, errno, "list", path);
    goto out;
  }
  for (;;) {
    struct stat s;
    size_t ent_len;
    errno = 0;
    e = readdir(d);
    if (e == NULL) {
      if (errno != 0) rc = errno_error(err, errno, "list", path);
      break;
    }
    /* (1) ".", "..", our temporary and lock files; (2) the prefix */
    if (e->d_name[0] == '.' || strncmp(e->d_name, name, name_len) != 0) continue;
    if (fstatat(dirfd(d), e->d_name, &s, 0) != 0) {
      if (errno == ENOENT) continue; /* deleted while we list */
      rc = errno_error(err, errno, "stat", path);
      break;
    }
    ent_len = strlen(e->d_name);
    key = malloc(key_dir_len + ent_len + 2);
    if (key == NULL) {
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory listing %s", path);
      break;
    }
    memcpy(key, key_dir, key_dir_len);
    memcpy(key + key_dir_len, e->d_name, ent_len + 1);
    if (S_ISDIR(s.st_mode)) {
      char *sub = join_path(path, e->d_name, ent_len);
      if (sub == NULL) {
        rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory listing %s", path);
        break;
      }
      if (depth + 1 < FILE_LIST_MAX_DEPTH) {
        key[key_dir_len + ent_len] = '/';
        key[key_dir_len + ent_len + 1] = '\0';
        rc = list_dir(sub, key, "", after, depth + 1, v, err);
      }
      free(sub);
      free(key);
      key = NULL;
      if (rc != LTX_OK) break;
    } else if (S_ISREG(s.st_mode) && (after == NULL || strcmp(key, after) > 0)) {
      rc = obj_vec_push(v, key, &s, err); /* takes key */
      key = NULL;
      if (rc != LTX_OK) break;
    } else {
      free(key);
      key = NULL;
    }
  }
out:
  free(key);
  if (d != NULL) closedir(d);
  return rc;
}

static int file_list(store *st, const char *prefix, const char *after, store_object_list *out,
                     ltx_error *err) {
  file_store *fs = file_of(st);
  obj_vec v = {0};
  const char *slash;
  char *key_dir = NULL, *path = NULL;
  size_t key_dir_len;
  int rc;

  out->items = NULL;
  out->n = 0;
  if (prefix == NULL) prefix = "";
  rc = check_key(prefix, 1, err);
  if (rc != LTX_OK) goto out;
  slash = strrchr(prefix, '/');
  key_dir_len = slash ? (size_t)(slash - prefix) + 1 : 0;
  key_dir = strndup(prefix, key_dir_len);
  path = join_path(fs->root, prefix, key_dir_len ? key_dir_len - 1 : 0);
  if (key_dir == NULL || path == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory listing %s", prefix);
    goto out;
  }
  rc = list_dir(path, key_dir, prefix + key_dir_len, after, 0, &v, err);
  if (rc == STORE_ERR_NOT_FOUND || (rc == STORE_ERR_IO && key_dir_len > 0)) {
    /* The prefix's directory is missing: an empty level unless the root is
    ** what is missing (then the user named the wrong replica). */
    struct stat s;
    if (stat(fs->root, &s) != 0) {
      rc = errno == ENOENT ? ltx_error_set(err, STORE_ERR_NOT_FOUND,
                                           "replica directory %s does not exist", fs->root)
                           : errno_error(err, errno, "stat", fs->root);
    } else if (!S_ISDIR(s.st_mode)) {
      rc = ltx_error_set(err, STORE_ERR_IO, "replica path %s is not a directory", fs->root);
    } else if (rc == STORE_ERR_NOT_FOUND) {
      ltx_error_clear(err);
      rc = LTX_OK;
    }
  }
  if (rc != LTX_OK) goto out;
  if (v.n > 1) qsort(v.items, v.n, sizeof(v.items[0]), cmp_object_key);
  out->items = v.items;
  out->n = v.n;
  v.items = NULL;
  v.n = 0;
out:
  for (size_t i = 0; i < v.n; i++) free(v.items[i].key);
  free(v.items);
  free(key_dir);
  free(path);
  return rc;
}

/* ---- reads ---- */

/* Opens key for reading; NOT_FOUND names the path. */
static int open_key(file_store *fs, const char *key, int *fd_out, char **path_out, ltx_error *err) {
  int rc = check_key(key, 0, err);
  if (rc != LTX_OK) return rc;
  *path_out = join_path(fs->root, key, strlen(key));
  if (*path_out == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory opening %s", key);
  *fd_out = open(*path_out, O_RDONLY | O_CLOEXEC);
  if (*fd_out < 0) return errno_error(err, errno, "open", *path_out);
  return LTX_OK;
}

/* Reads n bytes at off; *got_out is what was read before end of file. */
static int pread_all(int fd, uint8_t *buf, size_t n, uint64_t off, size_t *got_out,
                     const char *path, ltx_error *err) {
  size_t got = 0;
  int rc = LTX_OK;
  while (got < n) {
    ssize_t r = pread(fd, buf + got, n - got, (off_t)(off + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      rc = errno_error(err, errno, "read", path);
      break;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  *got_out = got;
  return rc;
}

/* A streamed read hands over this much at a time. */
#define SINK_PIECE (256u << 10)

/* n bytes at off of key: into buf, or (sink non-NULL, buf NULL) read a
** piece at a time into one small buffer, each piece told as it is read.
** One open either way; a short object is STORE_ERR_SHORT_READ, found before
** the piece it cuts is told. */
static int read_range_to(store *st, const char *key, uint64_t off, uint8_t *buf, size_t n,
                         const store_sink *sink, ltx_error *err) {
  char *path = NULL;
  uint8_t *piece = NULL;
  int fd = -1;
  size_t got = 0;
  int rc;

  /* Catch off_t overflow before pread sees a negative offset. */
  if (off > (uint64_t)INT64_MAX || n > (uint64_t)INT64_MAX - off) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "%s: range of %zu bytes at offset %llu is too large",
                       key, n, (unsigned long long)off);
    goto out;
  }
  rc = open_key(file_of(st), key, &fd, &path, err);
  if (rc != LTX_OK) goto out;
  if (sink == NULL) {
    rc = pread_all(fd, buf, n, off, &got, path, err);
  } else if ((piece = malloc(n < SINK_PIECE ? (n ? n : 1) : SINK_PIECE)) == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "%s: out of memory", path);
  } else {
    while (got < n && rc == LTX_OK) {
      size_t len = n - got < SINK_PIECE ? n - got : SINK_PIECE, piece_got = 0;
      rc = pread_all(fd, piece, len, off + got, &piece_got, path, err);
      if (rc != LTX_OK || piece_got < len) {
        got += piece_got;
        break;
      }
      if (sink->fn(sink->arg, got, piece, len) != 0) {
        rc = ltx_error_set(err, STORE_ERR_STOPPED, "%s: read of %zu bytes at offset %llu stopped "
                           "by its reader after %zu", path, n, (unsigned long long)off, got + len);
        break;
      }
      got += len;
    }
  }
  if (rc == LTX_OK && got < n) {
    struct stat s;
    long long sz = fstat(fd, &s) == 0 ? (long long)s.st_size : -1;
    rc = ltx_error_set(err, STORE_ERR_SHORT_READ,
                       "%s: short read: wanted %zu bytes at offset %llu, got %zu "
                       "(object is %lld bytes)",
                       path, n, (unsigned long long)off, got, sz);
  }
out:
  if (fd >= 0) close(fd);
  free(piece);
  free(path);
  return rc;
}

static int file_read_range(store *st, const char *key, uint64_t off, uint8_t *buf, size_t n,
                           ltx_error *err) {
  return read_range_to(st, key, off, buf, n, NULL, err);
}

static int file_read_range_sink(store *st, const char *key, uint64_t off, size_t n,
                                const store_sink *sink, ltx_error *err) {
  return read_range_to(st, key, off, NULL, n, sink, err);
}

static int file_read_suffix(store *st, const char *key, uint8_t *buf, size_t n, size_t *nread,
                            uint64_t *object_size, ltx_error *err) {
  char *path = NULL;
  int fd = -1;
  struct stat s;
  size_t want, got = 0;
  int rc;

  *nread = 0;
  *object_size = 0;
  rc = open_key(file_of(st), key, &fd, &path, err);
  if (rc != LTX_OK) goto out;
  if (fstat(fd, &s) != 0) {
    rc = errno_error(err, errno, "stat", path);
    goto out;
  }
  want = (uint64_t)s.st_size < n ? (size_t)s.st_size : n;
  rc = pread_all(fd, buf, want, (uint64_t)s.st_size - want, &got, path, err);
  if (rc == LTX_OK && got < want) {
    /* only if the file shrank under us: objects are replaced, not edited */
    rc = ltx_error_set(err, STORE_ERR_SHORT_READ,
                       "%s: short read: the last %zu bytes of %lld, got %zu", path, want,
                       (long long)s.st_size, got);
    goto out;
  }
  if (rc != LTX_OK) goto out;
  *nread = want;
  *object_size = (uint64_t)s.st_size;
out:
  if (fd >= 0) close(fd);
  free(path);
  return rc;
}

static int file_head(store *st, const char *key, uint64_t *size, char *etag, size_t etag_cap,
                     ltx_error *err) {
  char *path = NULL;
  struct stat s;
  int rc = check_key(key, 0, err);

  if (rc != LTX_OK) goto out;
  path = join_path(file_of(st)->root, key, strlen(key));
  if (path == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory for %s", key);
    goto out;
  }
  if (stat(path, &s) != 0) {
    rc = errno_error(err, errno, "stat", path);
    goto out;
  }
  if (!S_ISREG(s.st_mode)) {
    rc = ltx_error_set(err, STORE_ERR_NOT_FOUND, "%s is not a regular file", path);
    goto out;
  }
  if (size != NULL) *size = (uint64_t)s.st_size;
  if (etag != NULL) rc = format_etag(&s, etag, etag_cap, err);
out:
  free(path);
  return rc;
}

/* ---- put ---- */

/* fsync of a directory makes a rename or a new entry durable. Filesystems
** that cannot sync directories say EINVAL; nothing more can be done there. */
static int sync_dir(const char *dir, ltx_error *err) {
  int rc = LTX_OK;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_error(err, errno, "open directory", dir);
  if (fsync(fd) != 0 && errno != EINVAL) rc = errno_error(err, errno, "fsync directory", dir);
  close(fd);
  return rc;
}

/* mkdir -p dir, syncing the parent of every directory it creates so the
** new entry survives a crash. */
static int make_dirs(char *dir, ltx_error *err) {
  int rc = LTX_OK;
  for (char *z = dir + 1;; z++) {
    if (*z != '/' && *z != '\0') continue;
    char c = *z;
    *z = '\0';
    if (mkdir(dir, 0777) == 0) {
      char *slash = strrchr(dir, '/');
      if (slash != NULL) {
        /* the parent is dir up to the last '/' ("/" for "/x") */
        char saved = slash[slash == dir ? 1 : 0];
        slash[slash == dir ? 1 : 0] = '\0';
        rc = sync_dir(dir, err);
        slash[slash == dir ? 1 : 0] = saved;
      } else {
        rc = sync_dir(".", err);
      }
    } else if (errno != EEXIST) {
      rc = errno_error(err, errno, "create directory", dir);
    }
    *z = c;
    if (rc != LTX_OK || c == '\0') break;
  }
  return rc;
}

static int write_all(int fd, const uint8_t *data, size_t n, const char *path, ltx_error *err) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, data + done, n - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno_error(err, errno, "write", path);
    }
    done += (size_t)w;
  }
  return LTX_OK;
}

/* Renames tmp to path unless path exists, atomically. */
static int rename_if_absent(const char *tmp, const char *path, const char *key, ltx_error *err) {
#ifdef RENAME_NOREPLACE
  if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0) return LTX_OK;
  if (errno == EEXIST) goto exists;
  /* Old kernels and some filesystems (NFS, FUSE) lack the flag: fall back. */
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
    return errno_error(err, errno, "rename to", path);
  }
#endif
  /* link() refuses an existing target atomically; the tmp name goes after. */
  if (link(tmp, path) != 0) {
    if (errno == EEXIST) goto exists;
    return errno_error(err, errno, "link", path);
  }
  /* The object is in place; a leftover dot-name is invisible to list and
  ** failing a put that happened would be worse. */
  (void)unlink(tmp);
  return LTX_OK;
exists:
  return ltx_error_set(err, STORE_ERR_PRECONDITION, "%s: already exists (put if absent)", key);
}

/* Replaces path with tmp if path's etag is still want. The caller holds
** the directory's lock, so no conditional put slips in between. */
static int rename_if_match(const char *tmp, const char *path, const char *key, const char *want,
                           ltx_error *err) {
  char have[STORE_ETAG_CAP];
  struct stat s;
  int rc;

  if (stat(path, &s) != 0) {
    if (errno == ENOENT) {
      return ltx_error_set(err, STORE_ERR_PRECONDITION,
                           "%s: does not exist, expected etag %s (put if match)", key, want);
    }
    return errno_error(err, errno, "stat", path);
  }
  rc = format_etag(&s, have, sizeof(have), err);
  if (rc != LTX_OK) return rc;
  if (strcmp(have, want) != 0) {
    return ltx_error_set(err, STORE_ERR_PRECONDITION, "%s: etag is %s, expected %s (put if match)",
                         key, have, want);
  }
  if (rename(tmp, path) != 0) return errno_error(err, errno, "rename to", path);
  return LTX_OK;
}

/* Writes the whole body to fd, 1 MiB at a time from a file body. */
static int write_body(int fd, const store_body *b, const char *path, ltx_error *err) {
  uint8_t *buf = NULL;
  int rc = LTX_OK;
  if (b->fd < 0) return write_all(fd, b->data, (size_t)b->size, path, err);
  buf = malloc(1u << 20);
  if (buf == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory writing %s", path);
  for (uint64_t off = 0; off < b->size && rc == LTX_OK; off += 1u << 20) {
    size_t n = b->size - off < (1u << 20) ? (size_t)(b->size - off) : (1u << 20);
    rc = store_body_read(b, off, buf, n, err);
    if (rc == LTX_OK) rc = write_all(fd, buf, n, path, err);
  }
  free(buf);
  return rc;
}

static int file_put(store *st, const char *key, const store_body *body, int64_t mtime_ms,
                    store_put_cond cond, const char *if_match_etag, char *etag_out,
                    size_t etag_cap, ltx_error *err) {
  file_store *fs = file_of(st);
  char *path = NULL, *dir = NULL, *tmp = NULL, *lock_path = NULL;
  const char *base;
  int fd = -1, lock_fd = -1;
  int tmp_exists = 0; /* tmp exists and must go on failure */
  struct stat s;
  int rc = check_key(key, 0, err);

  if (rc != LTX_OK) goto out;
  if (cond == STORE_PUT_IF_MATCH && (if_match_etag == NULL || if_match_etag[0] == '\0')) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "%s: put if match without an etag", key);
    goto out;
  }
  if (etag_out != NULL && etag_cap < STORE_ETAG_CAP) {
    /* checked first: a put that succeeded must not then fail over this */
    rc = ltx_error_set(err, LTX_ERR_ARG, "etag buffer of %zu bytes is too small (use %d)",
                       etag_cap, STORE_ETAG_CAP);
    goto out;
  }
  path = join_path(fs->root, key, strlen(key));
  base = path ? strrchr(path, '/') : NULL;
  dir = base ? strndup(path, base == path ? 1 : (size_t)(base - path)) : strdup(".");
  base = base ? base + 1 : path;
  if (path == NULL || dir == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory writing %s", key);
    goto out;
  }
  rc = make_dirs(dir, err);
  if (rc != LTX_OK) goto out;

  for (int tries = 0; fd < 0; tries++) {
    free(tmp);
    if (asprintf(&tmp, "%s/.%s.tmp.%ld.%lu", dir, base, (long)getpid(),
                 (unsigned long)atomic_fetch_add(&tmp_seq, 1)) < 0) {
      tmp = NULL;
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory writing %s", key);
      goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    /* EEXIST: a crashed process with our pid left this name behind */
    if (fd < 0 && (errno != EEXIST || tries >= 100)) {
      rc = errno_error(err, errno, "create", tmp);
      goto out;
    }
  }
  tmp_exists = 1;
  rc = write_body(fd, body, tmp, err);
  if (rc != LTX_OK) goto out;
  if (mtime_ms >= 0) {
    /* Litestream's file backend sets atime and mtime to the LTX timestamp
    ** (docs/replica-layout.md); the listing reads it back as the file's time. */
    struct timespec ts[2];
    ts[0].tv_sec = (time_t)(mtime_ms / 1000);
    ts[0].tv_nsec = (long)(mtime_ms % 1000) * 1000000L;
    ts[1] = ts[0];
    if (futimens(fd, ts) != 0) {
      rc = errno_error(err, errno, "set time of", tmp);
      goto out;
    }
  }
  if (fsync(fd) != 0) {
    rc = errno_error(err, errno, "fsync", tmp);
    goto out;
  }

  if (cond != STORE_PUT_ALWAYS) {
    if (asprintf(&lock_path, "%s/%s", dir, FILE_LOCK_NAME) < 0) {
      lock_path = NULL;
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory writing %s", key);
      goto out;
    }
    lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (lock_fd < 0) {
      rc = errno_error(err, errno, "open lock", lock_path);
      goto out;
    }
    while (flock(lock_fd, LOCK_EX) != 0) {
      if (errno != EINTR) {
        rc = errno_error(err, errno, "lock", lock_path);
        goto out;
      }
    }
  }
  switch (cond) {
    case STORE_PUT_IF_ABSENT:
      rc = rename_if_absent(tmp, path, key, err);
      break;
    case STORE_PUT_IF_MATCH:
      rc = rename_if_match(tmp, path, key, if_match_etag, err);
      break;
    case STORE_PUT_ALWAYS:
      rc = rename(tmp, path) == 0 ? LTX_OK : errno_error(err, errno, "rename to", path);
      break;
    default:
      rc = ltx_error_set(err, LTX_ERR_ARG, "%s: unknown put condition %d", key, (int)cond);
      break;
  }
  if (rc != LTX_OK) goto out;
  tmp_exists = 0;

  /* The etag of the inode we wrote, read through our own descriptor after
  ** the rename changed its ctime: a concurrent put cannot lend us its etag. */
  if (etag_out != NULL) {
    if (fstat(fd, &s) != 0) {
      rc = errno_error(err, errno, "stat", path);
      goto out;
    }
    rc = format_etag(&s, etag_out, etag_cap, err);
    if (rc != LTX_OK) goto out;
  }
  rc = sync_dir(dir, err);
out:
  /* fsync succeeded before any rename, so close cannot lose data here */
  if (fd >= 0) close(fd);
  if (tmp_exists) unlink(tmp);
  if (lock_fd >= 0) close(lock_fd); /* releases the flock */
  free(path);
  free(dir);
  free(tmp);
  free(lock_path);
  return rc;
}

/* ---- delete, close, open ---- */

static int file_del(store *st, const char *const *keys, size_t n, ltx_error *err) {
  file_store *fs = file_of(st);
  char *path = NULL;
  int rc = LTX_OK;

  for (size_t i = 0; i < n && rc == LTX_OK; i++) {
    rc = check_key(keys[i], 0, err);
    if (rc != LTX_OK) break;
    path = join_path(fs->root, keys[i], strlen(keys[i]));
    if (path == NULL) {
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory deleting %s", keys[i]);
      break;
    }
    if (unlink(path) != 0 && errno != ENOENT) rc = errno_error(err, errno, "delete", path);
    free(path);
    path = NULL;
  }
  free(path);
  return rc;
}

static void file_close(store *st) {
  file_store *fs = file_of(st);
  if (fs == NULL) return;
  free(fs->root);
  free(fs);
  st->impl = NULL;
}

static const store_ops file_ops = {
    .scheme = "file",
    .list = file_list,
    .read_range = file_read_range,
    .read_range_sink = file_read_range_sink,
    .read_suffix = file_read_suffix,
    .head = file_head,
    .put = file_put,
    .del = file_del,
    .close = file_close,
};

/* dir need not exist yet (a primary creates it on the first put); if it
** exists it must be a directory. */
int store_file_open(const char *dir, const char *url, store **out, ltx_error *err) {
  store *st = NULL;
  file_store *fs = NULL;
  struct stat s;
  size_t n;
  int rc = LTX_OK;

  *out = NULL;
  if (dir == NULL || dir[0] == '\0') {
    rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': empty path", url ? url : "");
    goto out;
  }
  if (stat(dir, &s) == 0 && !S_ISDIR(s.st_mode)) {
    rc = ltx_error_set(err, STORE_ERR_URL, "replica URL '%s': %s is not a directory",
                       url ? url : dir, dir);
    goto out;
  }
  st = calloc(1, sizeof(*st));
  fs = calloc(1, sizeof(*fs));
  if (st == NULL || fs == NULL || (fs->root = strdup(dir)) == NULL ||
      (st->url = strdup(url ? url : dir)) == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory opening %s", dir);
    goto out;
  }
  /* "dir/" and "dir" are one replica; keys are joined with one '/' */
  n = strlen(fs->root);
  while (n > 1 && fs->root[n - 1] == '/') fs->root[--n] = '\0';
  st->ops = &file_ops;
  st->layout = STORE_LAYOUT_FILE;
  st->impl = fs;
  *out = st;
  st = NULL;
  fs = NULL;
out:
  if (fs != NULL) free(fs->root);
  free(fs);
  if (st != NULL) free(st->url);
  free(st);
  return rc;
}
