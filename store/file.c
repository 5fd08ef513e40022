/*
** file.c: the file:// backend, a replica in a local (or mounted) directory.
**
** Keys are relative paths under the root directory, so the replica layout
** is Litestream's own file layout (LTX.md section 2): ROOT/ltx/0/<name>.
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
  char *zRoot;  /* root directory, no trailing '/' (unless it is "/") */
} file_store;

/* Makes temporary names unique between threads of one process; the pid
** makes them unique between processes, O_EXCL catches what is left. */
static atomic_ulong nTmpSeq;

static file_store *file_of(store *st) { return (file_store *)st->impl; }

/* Records a failed system call on path. ENOENT becomes NOT_FOUND so callers
** can tell "absent" from "broken". strerror is thread-safe in glibc >= 2.32
** and musl. */
static int errno_error(ltx_error *err, int e, const char *zWhat, const char *zPath) {
  int code = (e == ENOENT) ? STORE_ERR_NOT_FOUND : (e == ENOMEM ? LTX_ERR_NOMEM : STORE_ERR_IO);
  return ltx_error_set(err, code, "%s %s: %s", zWhat, zPath, strerror(e));
}

/* A key is a relative path of non-empty components, none "." or "..":
** it can never name anything outside the root. A list prefix may also be
** empty or end in '/', and its last component is a name prefix, not a path. */
static int check_key(const char *key, int bPrefix, ltx_error *err) {
  const char *z = key;

  if (key == NULL || (key[0] == '\0' && !bPrefix)) {
    return ltx_error_set(err, LTX_ERR_ARG, "empty object key");
  }
  if (key[0] == '/') {
    return ltx_error_set(err, LTX_ERR_ARG, "object key '%s' must be relative", key);
  }
  while (*z != '\0') {
    size_t n = strcspn(z, "/");
    int bLast = z[n] == '\0';
    int bDots = (n == 1 && z[0] == '.') || (n == 2 && z[0] == '.' && z[1] == '.');
    if ((!bLast && (n == 0 || bDots)) || (bLast && !bPrefix && bDots)) {
      return ltx_error_set(err, LTX_ERR_ARG, "object key '%s' is not a clean relative path",
                           key);
    }
    if (bLast) break;
    z += n + 1;
    if (*z == '\0' && !bPrefix) {
      return ltx_error_set(err, LTX_ERR_ARG, "object key '%s' ends in '/'", key);
    }
  }
  return LTX_OK;
}

/* "root/rel" (or "root" when rel is empty) in a new string. */
static char *join_path(const char *zRoot, const char *zRel, size_t nRel) {
  size_t nRoot = strlen(zRoot);
  size_t bSlash = (nRoot > 0 && zRoot[nRoot - 1] != '/' && nRel > 0) ? 1 : 0;
  char *z = malloc(nRoot + bSlash + nRel + 1);
  if (z == NULL) return NULL;
  memcpy(z, zRoot, nRoot);
  if (bSlash) z[nRoot] = '/';
  memcpy(z + nRoot + bSlash, zRel, nRel);
  z[nRoot + bSlash + nRel] = '\0';
  return z;
}

static int64_t timespec_ms(const struct timespec *ts) {
  /* tv_nsec is never negative, so this rounds down before 1970 too */
  return (int64_t)ts->tv_sec * 1000 + ts->tv_nsec / 1000000;
}

static int64_t timespec_ns(const struct timespec *ts) {
  return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static int format_etag(const struct stat *s, char *zEtag, size_t nCap, ltx_error *err) {
  int n = snprintf(zEtag, nCap, "%llx-%llx-%llx-%llx", (unsigned long long)s->st_ino,
                   (unsigned long long)s->st_size,
                   (unsigned long long)timespec_ns(&s->st_mtim),
                   (unsigned long long)timespec_ns(&s->st_ctim));
  if (n < 0 || (size_t)n >= nCap) {
    return ltx_error_set(err, LTX_ERR_ARG, "etag buffer of %zu bytes is too small (use %d)",
                         nCap, STORE_ETAG_CAP);
  }
  return LTX_OK;
}

/* ---- list ---- */

typedef struct obj_vec {
  store_object *a;
  size_t n, nAlloc;
} obj_vec;

static int obj_vec_push(obj_vec *v, char *zKey, const struct stat *s, ltx_error *err) {
  if (v->n == v->nAlloc) {
    size_t nNew = v->nAlloc ? v->nAlloc * 2 : 64;
    store_object *aNew = realloc(v->a, nNew * sizeof(*aNew));
    if (aNew == NULL) {
      free(zKey);
      return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory listing objects");
    }
    v->a = aNew;
    v->nAlloc = nNew;
  }
  v->a[v->n].key = zKey;
  v->a[v->n].size = (uint64_t)s->st_size;
  v->a[v->n].mtime_ms = timespec_ms(&s->st_mtim);
  v->n++;
  return LTX_OK;
}

static int cmp_object_key(const void *a, const void *b) {
  return strcmp(((const store_object *)a)->key, ((const store_object *)b)->key);
}

/* Adds the files under directory zPath (whose key prefix is zKeyDir, "" or
** ending in '/') whose names start with zName, and everything below the
** subdirectories that do. */
static int list_dir(const char *zPath, const char *zKeyDir, const char *zName,
                    const char *after, int depth, obj_vec *v, ltx_error *err) {
  DIR *d = NULL;
  struct dirent *e;
  char *zKey = NULL;
  size_t nKeyDir = strlen(zKeyDir), nName = strlen(zName);
  int rc = LTX_OK;

  d = opendir(zPath);
  if (d == NULL) {
    /* vanished between readdir and here: another process deleted it */
    if (depth > 0 && errno == ENOENT) goto out;
    rc = errno_error(err, errno, "list", zPath);
    goto out;
  }
  for (;;) {
    struct stat s;
    size_t nEnt;
    errno = 0;
    e = readdir(d);
    if (e == NULL) {
      if (errno != 0) rc = errno_error(err, errno, "list", zPath);
      break;
    }
    /* (1) ".", "..", our temporary and lock files; (2) the prefix */
    if (e->d_name[0] == '.' || strncmp(e->d_name, zName, nName) != 0) continue;
    if (fstatat(dirfd(d), e->d_name, &s, 0) != 0) {
      if (errno == ENOENT) continue; /* deleted while we list */
      rc = errno_error(err, errno, "stat", zPath);
      break;
    }
    nEnt = strlen(e->d_name);
    zKey = malloc(nKeyDir + nEnt + 2);
    if (zKey == NULL) {
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory listing %s", zPath);
      break;
    }
    memcpy(zKey, zKeyDir, nKeyDir);
    memcpy(zKey + nKeyDir, e->d_name, nEnt + 1);
    if (S_ISDIR(s.st_mode)) {
      char *zSub = join_path(zPath, e->d_name, nEnt);
      if (zSub == NULL) {
        rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory listing %s", zPath);
        break;
      }
      if (depth + 1 < FILE_LIST_MAX_DEPTH) {
        zKey[nKeyDir + nEnt] = '/';
        zKey[nKeyDir + nEnt + 1] = '\0';
        rc = list_dir(zSub, zKey, "", after, depth + 1, v, err);
      }
      free(zSub);
      free(zKey);
      zKey = NULL;
      if (rc != LTX_OK) break;
    } else if (S_ISREG(s.st_mode) && (after == NULL || strcmp(zKey, after) > 0)) {
      rc = obj_vec_push(v, zKey, &s, err); /* takes zKey */
      zKey = NULL;
      if (rc != LTX_OK) break;
    } else {
      free(zKey);
      zKey = NULL;
    }
  }
out:
  free(zKey);
  if (d != NULL) closedir(d);
  return rc;
}

static int file_list(store *st, const char *prefix, const char *after, store_object_list *out,
                     ltx_error *err) {
  file_store *fs = file_of(st);
  obj_vec v = {0};
  const char *zSlash;
  char *zKeyDir = NULL, *zPath = NULL;
  size_t nKeyDir;
  int rc;

  out->items = NULL;
  out->n = 0;
  if (prefix == NULL) prefix = "";
  rc = check_key(prefix, 1, err);
  if (rc != LTX_OK) goto out;
  zSlash = strrchr(prefix, '/');
  nKeyDir = zSlash ? (size_t)(zSlash - prefix) + 1 : 0;
  zKeyDir = strndup(prefix, nKeyDir);
  zPath = join_path(fs->zRoot, prefix, nKeyDir ? nKeyDir - 1 : 0);
  if (zKeyDir == NULL || zPath == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory listing %s", prefix);
    goto out;
  }
  rc = list_dir(zPath, zKeyDir, prefix + nKeyDir, after, 0, &v, err);
  if (rc == STORE_ERR_NOT_FOUND || (rc == STORE_ERR_IO && nKeyDir > 0)) {
    /* The prefix's directory is missing: an empty level unless the root is
    ** what is missing (then the user named the wrong replica). */
    struct stat s;
    if (stat(fs->zRoot, &s) != 0) {
      rc = errno == ENOENT ? ltx_error_set(err, STORE_ERR_NOT_FOUND,
                                           "replica directory %s does not exist", fs->zRoot)
                           : errno_error(err, errno, "stat", fs->zRoot);
    } else if (!S_ISDIR(s.st_mode)) {
      rc = ltx_error_set(err, STORE_ERR_IO, "replica path %s is not a directory", fs->zRoot);
    } else if (rc == STORE_ERR_NOT_FOUND) {
      ltx_error_clear(err);
      rc = LTX_OK;
    }
  }
  if (rc != LTX_OK) goto out;
  if (v.n > 1) qsort(v.a, v.n, sizeof(v.a[0]), cmp_object_key);
  out->items = v.a;
  out->n = v.n;
  v.a = NULL;
  v.n = 0;
out:
  for (size_t i = 0; i < v.n; i++) free(v.a[i].key);
  free(v.a);
  free(zKeyDir);
  free(zPath);
  return rc;
}

/* ---- reads ---- */

/* Opens key for reading; NOT_FOUND names the path. */
static int open_key(file_store *fs, const char *key, int *pFd, char **pzPath, ltx_error *err) {
  int rc = check_key(key, 0, err);
  if (rc != LTX_OK) return rc;
  *pzPath = join_path(fs->zRoot, key, strlen(key));
  if (*pzPath == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory opening %s", key);
  *pFd = open(*pzPath, O_RDONLY | O_CLOEXEC);
  if (*pFd < 0) return errno_error(err, errno, "open", *pzPath);
  return LTX_OK;
}

/* Reads n bytes at off; *pnGot is what was read before end of file. */
static int pread_all(int fd, uint8_t *buf, size_t n, uint64_t off, size_t *pnGot,
                     const char *zPath, ltx_error *err) {
  size_t nGot = 0;
  int rc = LTX_OK;
  while (nGot < n) {
    ssize_t r = pread(fd, buf + nGot, n - nGot, (off_t)(off + nGot));
    if (r < 0) {
      if (errno == EINTR) continue;
      rc = errno_error(err, errno, "read", zPath);
      break;
    }
    if (r == 0) break;
    nGot += (size_t)r;
  }
  *pnGot = nGot;
  return rc;
}

static int file_read_range(store *st, const char *key, uint64_t off, uint8_t *buf, size_t n,
                           ltx_error *err) {
  char *zPath = NULL;
  int fd = -1;
  size_t nGot = 0;
  int rc;

  /* Catch off_t overflow before pread sees a negative offset. */
  if (off > (uint64_t)INT64_MAX || n > (uint64_t)INT64_MAX - off) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "%s: range of %zu bytes at offset %llu is too large",
                       key, n, (unsigned long long)off);
    goto out;
  }
  rc = open_key(file_of(st), key, &fd, &zPath, err);
  if (rc != LTX_OK) goto out;
  rc = pread_all(fd, buf, n, off, &nGot, zPath, err);
  if (rc == LTX_OK && nGot < n) {
    struct stat s;
    long long sz = fstat(fd, &s) == 0 ? (long long)s.st_size : -1;
    rc = ltx_error_set(err, STORE_ERR_SHORT_READ,
                       "%s: short read: wanted %zu bytes at offset %llu, got %zu "
                       "(object is %lld bytes)",
                       zPath, n, (unsigned long long)off, nGot, sz);
  }
out:
  if (fd >= 0) close(fd);
  free(zPath);
  return rc;
}

static int file_read_suffix(store *st, const char *key, uint8_t *buf, size_t n, size_t *nread,
                            uint64_t *object_size, ltx_error *err) {
  char *zPath = NULL;
  int fd = -1;
  struct stat s;
  size_t nWant, nGot = 0;
  int rc;

  *nread = 0;
  *object_size = 0;
  rc = open_key(file_of(st), key, &fd, &zPath, err);
  if (rc != LTX_OK) goto out;
  if (fstat(fd, &s) != 0) {
    rc = errno_error(err, errno, "stat", zPath);
    goto out;
  }
  nWant = (uint64_t)s.st_size < n ? (size_t)s.st_size : n;
  rc = pread_all(fd, buf, nWant, (uint64_t)s.st_size - nWant, &nGot, zPath, err);
  if (rc == LTX_OK && nGot < nWant) {
    /* only if the file shrank under us: objects are replaced, not edited */
    rc = ltx_error_set(err, STORE_ERR_SHORT_READ,
                       "%s: short read: the last %zu bytes of %lld, got %zu", zPath, nWant,
                       (long long)s.st_size, nGot);
    goto out;
  }
  if (rc != LTX_OK) goto out;
  *nread = nWant;
  *object_size = (uint64_t)s.st_size;
out:
  if (fd >= 0) close(fd);
  free(zPath);
  return rc;
}

static int file_head(store *st, const char *key, uint64_t *size, char *etag, size_t etag_cap,
                     ltx_error *err) {
  char *zPath = NULL;
  struct stat s;
  int rc = check_key(key, 0, err);

  if (rc != LTX_OK) goto out;
  zPath = join_path(file_of(st)->zRoot, key, strlen(key));
  if (zPath == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory for %s", key);
    goto out;
  }
  if (stat(zPath, &s) != 0) {
    rc = errno_error(err, errno, "stat", zPath);
    goto out;
  }
  if (!S_ISREG(s.st_mode)) {
    rc = ltx_error_set(err, STORE_ERR_NOT_FOUND, "%s is not a regular file", zPath);
    goto out;
  }
  if (size != NULL) *size = (uint64_t)s.st_size;
  if (etag != NULL) rc = format_etag(&s, etag, etag_cap, err);
out:
  free(zPath);
  return rc;
}

/* ---- put ---- */

/* fsync of a directory makes a rename or a new entry durable. Filesystems
** that cannot sync directories say EINVAL; nothing more can be done there. */
static int sync_dir(const char *zDir, ltx_error *err) {
  int rc = LTX_OK;
  int fd = open(zDir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_error(err, errno, "open directory", zDir);
  if (fsync(fd) != 0 && errno != EINVAL) rc = errno_error(err, errno, "fsync directory", zDir);
  close(fd);
  return rc;
}

/* mkdir -p zDir, syncing the parent of every directory it creates so the
** new entry survives a crash. */
static int make_dirs(char *zDir, ltx_error *err) {
  int rc = LTX_OK;
  for (char *z = zDir + 1;; z++) {
    if (*z != '/' && *z != '\0') continue;
    char c = *z;
    *z = '\0';
    if (mkdir(zDir, 0777) == 0) {
      char *zSlash = strrchr(zDir, '/');
      if (zSlash != NULL) {
        /* the parent is zDir up to the last '/' ("/" for "/x") */
        char cSave = zSlash[zSlash == zDir ? 1 : 0];
        zSlash[zSlash == zDir ? 1 : 0] = '\0';
        rc = sync_dir(zDir, err);
        zSlash[zSlash == zDir ? 1 : 0] = cSave;
      } else {
        rc = sync_dir(".", err);
      }
    } else if (errno != EEXIST) {
      rc = errno_error(err, errno, "create directory", zDir);
    }
    *z = c;
    if (rc != LTX_OK || c == '\0') break;
  }
  return rc;
}

static int write_all(int fd, const uint8_t *data, size_t n, const char *zPath, ltx_error *err) {
  size_t nDone = 0;
  while (nDone < n) {
    ssize_t w = write(fd, data + nDone, n - nDone);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno_error(err, errno, "write", zPath);
    }
    nDone += (size_t)w;
  }
  return LTX_OK;
}

/* Renames zTmp to zPath unless zPath exists, atomically. */
static int rename_if_absent(const char *zTmp, const char *zPath, const char *key,
                            ltx_error *err) {
#ifdef RENAME_NOREPLACE
  if (renameat2(AT_FDCWD, zTmp, AT_FDCWD, zPath, RENAME_NOREPLACE) == 0) return LTX_OK;
  if (errno == EEXIST) goto exists;
  /* Old kernels and some filesystems (NFS, FUSE) lack the flag: fall back. */
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
    return errno_error(err, errno, "rename to", zPath);
  }
#endif
  /* link() refuses an existing target atomically; the tmp name goes after. */
  if (link(zTmp, zPath) != 0) {
    if (errno == EEXIST) goto exists;
    return errno_error(err, errno, "link", zPath);
  }
  /* The object is in place; a leftover dot-name is invisible to list and
  ** failing a put that happened would be worse. */
  (void)unlink(zTmp);
  return LTX_OK;
exists:
  return ltx_error_set(err, STORE_ERR_PRECONDITION, "%s: already exists (put if absent)", key);
}

/* Replaces zPath with zTmp if zPath's etag is still zWant. The caller holds
** the directory's lock, so no conditional put slips in between. */
static int rename_if_match(const char *zTmp, const char *zPath, const char *key,
                           const char *zWant, ltx_error *err) {
  char zHave[STORE_ETAG_CAP];
  struct stat s;
  int rc;

  if (stat(zPath, &s) != 0) {
    if (errno == ENOENT) {
      return ltx_error_set(err, STORE_ERR_PRECONDITION,
                           "%s: does not exist, expected etag %s (put if match)", key, zWant);
    }
    return errno_error(err, errno, "stat", zPath);
  }
  rc = format_etag(&s, zHave, sizeof(zHave), err);
  if (rc != LTX_OK) return rc;
  if (strcmp(zHave, zWant) != 0) {
    return ltx_error_set(err, STORE_ERR_PRECONDITION,
                         "%s: etag is %s, expected %s (put if match)", key, zHave, zWant);
  }
  if (rename(zTmp, zPath) != 0) return errno_error(err, errno, "rename to", zPath);
  return LTX_OK;
}

/* Writes the whole body to fd, 1 MiB at a time from a file body. */
static int write_body(int fd, const store_body *b, const char *zPath, ltx_error *err) {
  uint8_t *buf = NULL;
  int rc = LTX_OK;
  if (b->fd < 0) return write_all(fd, b->data, (size_t)b->size, zPath, err);
  buf = malloc(1u << 20);
  if (buf == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory writing %s", zPath);
  for (uint64_t off = 0; off < b->size && rc == LTX_OK; off += 1u << 20) {
    size_t n = b->size - off < (1u << 20) ? (size_t)(b->size - off) : (1u << 20);
    rc = store_body_read(b, off, buf, n, err);
    if (rc == LTX_OK) rc = write_all(fd, buf, n, zPath, err);
  }
  free(buf);
  return rc;
}

static int file_put(store *st, const char *key, const store_body *body, int64_t mtime_ms,
                    store_put_cond cond, const char *if_match_etag, char *etag_out,
                    size_t etag_cap, ltx_error *err) {
  file_store *fs = file_of(st);
  char *zPath = NULL, *zDir = NULL, *zTmp = NULL, *zLock = NULL;
  const char *zBase;
  int fd = -1, fdLock = -1;
  int bTmp = 0; /* zTmp exists and must go on failure */
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
  zPath = join_path(fs->zRoot, key, strlen(key));
  zBase = zPath ? strrchr(zPath, '/') : NULL;
  zDir = zBase ? strndup(zPath, zBase == zPath ? 1 : (size_t)(zBase - zPath)) : strdup(".");
  zBase = zBase ? zBase + 1 : zPath;
  if (zPath == NULL || zDir == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory writing %s", key);
    goto out;
  }
  rc = make_dirs(zDir, err);
  if (rc != LTX_OK) goto out;

  for (int nTry = 0; fd < 0; nTry++) {
    free(zTmp);
    if (asprintf(&zTmp, "%s/.%s.tmp.%ld.%lu", zDir, zBase, (long)getpid(),
                 (unsigned long)atomic_fetch_add(&nTmpSeq, 1)) < 0) {
      zTmp = NULL;
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory writing %s", key);
      goto out;
    }
    fd = open(zTmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    /* EEXIST: a crashed process with our pid left this name behind */
    if (fd < 0 && (errno != EEXIST || nTry >= 100)) {
      rc = errno_error(err, errno, "create", zTmp);
      goto out;
    }
  }
  bTmp = 1;
  rc = write_body(fd, body, zTmp, err);
  if (rc != LTX_OK) goto out;
  if (mtime_ms >= 0) {
    /* Litestream's file backend sets atime and mtime to the LTX timestamp
    ** (LTX.md section 2); the listing reads it back as the file's time. */
    struct timespec aTs[2];
    aTs[0].tv_sec = (time_t)(mtime_ms / 1000);
    aTs[0].tv_nsec = (long)(mtime_ms % 1000) * 1000000L;
    aTs[1] = aTs[0];
    if (futimens(fd, aTs) != 0) {
      rc = errno_error(err, errno, "set time of", zTmp);
      goto out;
    }
  }
  if (fsync(fd) != 0) {
    rc = errno_error(err, errno, "fsync", zTmp);
    goto out;
  }

  if (cond != STORE_PUT_ALWAYS) {
    if (asprintf(&zLock, "%s/%s", zDir, FILE_LOCK_NAME) < 0) {
      zLock = NULL;
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory writing %s", key);
      goto out;
    }
    fdLock = open(zLock, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fdLock < 0) {
      rc = errno_error(err, errno, "open lock", zLock);
      goto out;
    }
    while (flock(fdLock, LOCK_EX) != 0) {
      if (errno != EINTR) {
        rc = errno_error(err, errno, "lock", zLock);
        goto out;
      }
    }
  }
  switch (cond) {
    case STORE_PUT_IF_ABSENT:
      rc = rename_if_absent(zTmp, zPath, key, err);
      break;
    case STORE_PUT_IF_MATCH:
      rc = rename_if_match(zTmp, zPath, key, if_match_etag, err);
      break;
    case STORE_PUT_ALWAYS:
      rc = rename(zTmp, zPath) == 0 ? LTX_OK : errno_error(err, errno, "rename to", zPath);
      break;
    default:
      rc = ltx_error_set(err, LTX_ERR_ARG, "%s: unknown put condition %d", key, (int)cond);
      break;
  }
  if (rc != LTX_OK) goto out;
  bTmp = 0;

  /* The etag of the inode we wrote, read through our own descriptor after
  ** the rename changed its ctime: a concurrent put cannot lend us its etag. */
  if (etag_out != NULL) {
    if (fstat(fd, &s) != 0) {
      rc = errno_error(err, errno, "stat", zPath);
      goto out;
    }
    rc = format_etag(&s, etag_out, etag_cap, err);
    if (rc != LTX_OK) goto out;
  }
  rc = sync_dir(zDir, err);
out:
  /* fsync succeeded before any rename, so close cannot lose data here */
  if (fd >= 0) close(fd);
  if (bTmp) unlink(zTmp);
  if (fdLock >= 0) close(fdLock); /* releases the flock */
  free(zPath);
  free(zDir);
  free(zTmp);
  free(zLock);
  return rc;
}

/* ---- delete, close, open ---- */

static int file_del(store *st, const char *const *keys, size_t n, ltx_error *err) {
  file_store *fs = file_of(st);
  char *zPath = NULL;
  int rc = LTX_OK;

  for (size_t i = 0; i < n && rc == LTX_OK; i++) {
    rc = check_key(keys[i], 0, err);
    if (rc != LTX_OK) break;
    zPath = join_path(fs->zRoot, keys[i], strlen(keys[i]));
    if (zPath == NULL) {
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory deleting %s", keys[i]);
      break;
    }
    if (unlink(zPath) != 0 && errno != ENOENT) rc = errno_error(err, errno, "delete", zPath);
    free(zPath);
    zPath = NULL;
  }
  free(zPath);
  return rc;
}

static void file_close(store *st) {
  file_store *fs = file_of(st);
  if (fs == NULL) return;
  free(fs->zRoot);
  free(fs);
  st->impl = NULL;
}

static const store_ops file_ops = {
    .scheme = "file",
    .list = file_list,
    .read_range = file_read_range,
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
  if (st == NULL || fs == NULL || (fs->zRoot = strdup(dir)) == NULL ||
      (st->url = strdup(url ? url : dir)) == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory opening %s", dir);
    goto out;
  }
  /* "dir/" and "dir" are one replica; keys are joined with one '/' */
  n = strlen(fs->zRoot);
  while (n > 1 && fs->zRoot[n - 1] == '/') fs->zRoot[--n] = '\0';
  st->ops = &file_ops;
  st->layout = STORE_LAYOUT_FILE;
  st->impl = fs;
  *out = st;
  st = NULL;
  fs = NULL;
out:
  if (fs != NULL) free(fs->zRoot);
  free(fs);
  if (st != NULL) free(st->url);
  free(st);
  return rc;
}
