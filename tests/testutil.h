/*
** testutil.h: small helpers shared by the Check suites (check_ltx.c,
** check_store.c, check_cache.c, ...).
**
** Header-only and layer-neutral: whole-file reads and writes, paths of the
** fixtures under TOP_SRCDIR "/tests/fixtures" (TOP_SRCDIR comes from the
** Makefile), temporary directories that a test removes again, a growable
** byte buffer, a seeded random generator so a failure reproduces,
** SHA-256 for the img_sha256 column of expected.tsv, the suites' main()
** (tu_run_suite), for suites that include cache.h, waits on the
** replica's poller with deadlines (tu_wait_*), and for suites that include
** store.h a store_sink that records what a streamed read told (tu_sink). All
** functions are static inline so a suite that uses a few of them compiles
** without unused-function warnings.
**
**   char path[PATH_MAX];
**   size_t n;
**   uint8_t *buf = tu_read_file(tu_fixture_path(path, sizeof(path),
**                               "main/ltx/0/0000000000000001-0000000000000001.ltx"), &n);
**   ...
**   free(buf);
*/
#ifndef LTVFS_TESTUTIL_H
#define LTVFS_TESTUTIL_H

#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <check.h>
#include <openssl/evp.h>

#ifndef TOP_SRCDIR
#define TOP_SRCDIR "."
#endif
/* The copy of ../shared/fixtures the tests read. */
#define TU_FIXTURES_DIR TOP_SRCDIR "/tests/fixtures"

/* TU_FIXTURES_DIR "/" rel into buf; returns buf ("" if it does not fit, so
** that opening it fails instead of opening a cut path). */
static inline char *tu_fixture_path(char *buf, size_t cap, const char *rel) {
  int n = snprintf(buf, cap, "%s/%s", TU_FIXTURES_DIR, rel);
  if (n < 0 || (size_t)n >= cap) buf[0] = '\0';
  return buf;
}

/* The whole file, malloc'd (free it), size in *n; NULL with errno set when
** it cannot be read. One extra NUL byte follows the data so text files can
** be used as strings. */
static inline uint8_t *tu_read_file(const char *path, size_t *n) {
  uint8_t *buf = NULL;
  FILE *f = fopen(path, "rb");
  long len;
  *n = 0;
  if (f == NULL) goto out;
  if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) goto out;
  buf = malloc((size_t)len + 1);
  if (buf == NULL) goto out;
  if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
    free(buf);
    buf = NULL;
    goto out;
  }
  buf[len] = 0;
  *n = (size_t)len;
out:
  if (f != NULL) fclose(f);
  return buf;
}

/* Creates or replaces path with n bytes; 0 on success, -1 otherwise. */
static inline int tu_write_file(const char *path, const void *buf, size_t n) {
  int rc = -1;
  FILE *f = fopen(path, "wb");
  if (f == NULL) goto out;
  if (n > 0 && fwrite(buf, 1, n, f) != n) goto out;
  rc = 0;
out:
  if (f != NULL && fclose(f) != 0) rc = -1;
  return rc;
}

/* Writes a file the way Litestream's file replica client does: into a
** temporary file beside it, then rename, so a reader never sees it partial.
** The stand-in for Litestream's writer in the poller tests; tests of
** in-place writers (cp, rsync --inplace) use tu_write_file on purpose. */
static inline int tu_write_file_atomic(const char *path, const void *buf, size_t n) {
  char tmp[4096];
  int len = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  if (len < 0 || (size_t)len >= sizeof(tmp)) return -1;
  if (tu_write_file(tmp, buf, n) != 0) return -1;
  return rename(tmp, path);
}

/* Writes n bytes at off of an existing file, in place (no truncation): a
** copy still in progress, or its completion. 0 on success. */
static inline int tu_write_at(const char *path, uint64_t off, const void *buf, size_t n) {
  int rc = -1;
  FILE *f = fopen(path, "r+b");
  if (f == NULL) goto out;
  if (fseek(f, (long)off, SEEK_SET) != 0) goto out;
  if (n > 0 && fwrite(buf, 1, n, f) != n) goto out;
  rc = 0;
out:
  if (f != NULL && fclose(f) != 0) rc = -1;
  return rc;
}

/* mkdir -p; 0 on success. */
static inline int tu_mkdirs(const char *path) {
  char tmp[4096];
  size_t len = strlen(path);
  if (len == 0 || len >= sizeof(tmp)) return -1;
  memcpy(tmp, path, len + 1);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(tmp, 0777) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return (mkdir(tmp, 0777) != 0 && errno != EEXIST) ? -1 : 0;
}

/* A new empty directory "<base>/<tag>-XXXXXX" in buf, where base is
** TOP_BUILDDIR/tests/tmp when the Makefile defines it, else $TMPDIR or /tmp.
** Returns buf, or NULL. Remove it with tu_rmtree. */
static inline char *tu_mkdtemp(char *buf, size_t cap, const char *tag) {
  const char *base;
#ifdef TOP_BUILDDIR
  base = TOP_BUILDDIR "/tests/tmp";
#else
  base = getenv("TMPDIR");
  if (base == NULL || *base == '\0') base = "/tmp";
#endif
  if (tu_mkdirs(base) != 0) return NULL;
  if ((size_t)snprintf(buf, cap, "%s/%s-XXXXXX", base, tag) >= cap) return NULL;
  return mkdtemp(buf);
}

static inline int tu_rmtree_one(const char *path, const struct stat *st, int type,
                                struct FTW *ftw) {
  (void)st;
  (void)type;
  (void)ftw;
  return remove(path);
}

/* rm -rf path (no symlinks followed); 0 on success. */
static inline int tu_rmtree(const char *path) {
  return nftw(path, tu_rmtree_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A growable byte buffer. Zero-initialise; free p when done. */
typedef struct tu_buf {
  uint8_t *p;
  size_t n, cap;
} tu_buf;

/* Appends n bytes; 0 on success, -1 when out of memory. */
static inline int tu_buf_append(tu_buf *b, const void *data, size_t n) {
  if (b->cap - b->n < n) {
    size_t cap = b->cap ? b->cap : 4096;
    uint8_t *grown;
    while (cap - b->n < n) cap *= 2;
    grown = realloc(b->p, cap);
    if (grown == NULL) return -1;
    b->p = grown;
    b->cap = cap;
  }
  if (n > 0) memcpy(b->p + b->n, data, n);
  b->n += n;
  return 0;
}

static inline void tu_buf_free(tu_buf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}

/* splitmix64: *state is the seed, advanced on every call. */
static inline uint64_t tu_rand(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static inline void tu_fill_random(uint64_t *state, uint8_t *buf, size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = tu_rand(state);
    size_t k = n - i < 8 ? n - i : 8;
    memcpy(buf + i, &v, k);
  }
}

/* SHA-256 of n bytes as 64 lowercase hex digits into hex[65] (libcrypto,
** which the library links anyway): expected.tsv gives restored images as
** img_sha256. Returns hex ("" if libcrypto fails). */
static inline char *tu_sha256_hex(const void *data, size_t n, char hex[65]) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int nd = 0;
  hex[0] = '\0';
  if (EVP_Digest(data, n, d, &nd, EVP_sha256(), NULL) != 1 || nd != 32) return hex;
  for (unsigned i = 0; i < nd; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
  return hex;
}

/* The main() of every Check suite: runs s (Check forks each test unless
** CK_FORK=no), 0 when every test passed. */
static inline int tu_run_suite(Suite *s) {
  SRunner *sr = srunner_create(s);
  int failed;
  srunner_run_all(sr, CK_NORMAL);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif /* LTVFS_TESTUTIL_H */

/* ---- waiting for the replica's poller (suites that include cache.h) ----
** A test that waits on the background poller waits for a condition with a
** deadline generous for a loaded 2-core machine, and says on expiry what it
** saw: the TXID, polls, poll errors and the poller's last error. It never
** sleeps a fixed time and hopes. */
#if defined(LTVFS_CACHE_H) && !defined(LTVFS_TESTUTIL_REPLICA)
#define LTVFS_TESTUTIL_REPLICA
#include <time.h>

#define TU_POLL_DEADLINE_MS 60000

static inline int64_t tu_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline uint64_t tu_latest_txid(replica *r) {
  replica_view *v = NULL;
  ltx_error err = {0};
  uint64_t t;
  ck_assert_msg(replica_latest(r, &v, &err) == 0, "%s", err.msg);
  t = replica_view_txid(v);
  replica_view_release(v);
  return t;
}

/* What the poller saw, for a failure message. */
static inline const char *tu_poller_state(replica *r, char *buf, size_t cap) {
  replica_stat s;
  replica_stats(r, &s);
  snprintf(buf, cap, "latest TXID %llx, %llu polls, %llu poll errors, %zu pending, last poll error: %s",
           (unsigned long long)tu_latest_txid(r), (unsigned long long)s.polls,
           (unsigned long long)s.poll_errors, s.pending_files,
           s.last_poll_error[0] ? s.last_poll_error : "(none)");
  return buf;
}

/* The latest view once its TXID is at least want (a new reference). */
static inline replica_view *tu_wait_txid(replica *r, uint64_t want) {
  int64_t deadline = tu_mono_ms() + TU_POLL_DEADLINE_MS;
  char state[1024];
  for (;;) {
    replica_view *v = NULL;
    ltx_error err = {0};
    ck_assert_msg(replica_latest(r, &v, &err) == 0, "%s", err.msg);
    if (replica_view_txid(v) >= want) return v;
    replica_view_release(v);
    if (tu_mono_ms() > deadline) break;
    usleep(5000);
  }
  ck_abort_msg("the poller did not reach TXID %llx within %d ms: %s", (unsigned long long)want,
               TU_POLL_DEADLINE_MS, tu_poller_state(r, state, sizeof(state)));
  return NULL;
}

/* Waits until the poller's last error contains what: a poll has ended
** that saw the file the error names in the state that makes it fail. */
static inline void tu_wait_poll_error(replica *r, const char *what) {
  int64_t deadline = tu_mono_ms() + TU_POLL_DEADLINE_MS;
  char state[1024];
  for (;;) {
    replica_stat s;
    replica_stats(r, &s);
    if (strstr(s.last_poll_error, what) != NULL) return;
    if (tu_mono_ms() > deadline) break;
    usleep(5000);
  }
  ck_abort_msg("the poller never reported '%s' within %d ms: %s", what, TU_POLL_DEADLINE_MS,
               tu_poller_state(r, state, sizeof(state)));
}

/* Waits until n more polls have ended than when called. */
static inline void tu_wait_polls(replica *r, uint64_t n) {
  replica_stat s;
  uint64_t start;
  int64_t deadline = tu_mono_ms() + TU_POLL_DEADLINE_MS;
  char state[1024];
  replica_stats(r, &s);
  start = s.polls;
  for (;;) {
    replica_stats(r, &s);
    if (s.polls >= start + n) return;
    if (tu_mono_ms() > deadline) break;
    usleep(5000);
  }
  ck_abort_msg("fewer than %llu polls in %d ms: %s", (unsigned long long)n, TU_POLL_DEADLINE_MS,
               tu_poller_state(r, state, sizeof(state)));
}
#endif

/* ---- a recording store_sink, for suites that include store.h ----
** Keeps the bytes a streamed read told, by the sink's contract (a retry
** tells them again from 0: what is had already is compared, not kept
** twice), and what it saw: the calls, the replays, bytes told out of
** order, and bytes told again that differ.
**
**   tu_sink rec;
**   tu_sink_init(&rec, n);
**   store_sink sink = {tu_sink_fn, &rec};
**   store_read_range_sink(st, key, off, n, &sink, &err);
**   ck_assert_mem_eq(rec.buf, want, n);
**   tu_sink_free(&rec);
*/
#if defined(LTVFS_STORE_H) && !defined(LTVFS_TESTUTIL_SINK)
#define LTVFS_TESTUTIL_SINK
typedef struct tu_sink {
  uint8_t *buf;
  size_t cap, have;   /* bytes kept: buf[0, have) */
  int calls, replays, gaps, differ;
  size_t stop_at;     /* non-zero: ask the read to stop once this much is had */
} tu_sink;

static inline void tu_sink_init(tu_sink *s, size_t cap) {
  memset(s, 0, sizeof(*s));
  s->cap = cap;
  s->buf = malloc(cap ? cap : 1);
}

static inline int tu_sink_fn(void *arg, uint64_t at, const uint8_t *data, size_t n) {
  tu_sink *s = arg;
  s->calls++;
  if (at > s->have || at + n > s->cap) {
    s->gaps++;
    return 0;
  }
  if (at < s->have) {
    size_t again = s->have - at < n ? (size_t)(s->have - at) : n;
    s->replays++;
    if (memcmp(s->buf + at, data, again) != 0) s->differ++;
    at += again;
    data += again;
    n -= again;
  }
  memcpy(s->buf + at, data, n);
  s->have = (size_t)at + n;
  return s->stop_at != 0 && s->have >= s->stop_at; /* a reader that has had enough */
}

static inline void tu_sink_free(tu_sink *s) { free(s->buf); }
#endif

/* ---- writing LTX files, for suites that include ltx.h ----
** An LTX file [txid, txid] of 4 KiB pages, as Litestream writes it (no page
** checksums): pages pgnos[0..n) in ascending order (pgnos NULL: pages
** 1..n), each page's bytes from fill(pgno, page, arg).
**
**   ltx_membuf mb = {0};
**   tu_encode_ltx(1, 100, NULL, 100, my_fill, NULL, &mb);   (then ltx_membuf_free)
**   tu_write_ltx(dir, 2, 120, pgnos, n, my_fill, NULL);    (into dir/ltx/0)
*/
#if defined(LTVFS_LTX_H) && !defined(LTVFS_TESTUTIL_LTX)
#define LTVFS_TESTUTIL_LTX
typedef void (*tu_page_fn)(uint32_t pgno, uint8_t *page, void *arg);

static inline void tu_encode_ltx(uint64_t txid, uint32_t commit, const uint32_t *pgnos, size_t n,
                                 tu_page_fn fill, void *arg, ltx_membuf *mb) {
  ltx_header h = {0};
  ltx_encoder *e = NULL;
  ltx_error err = {0};
  uint8_t page[4096];
  h.flags = LTX_HEADER_FLAG_NO_CHECKSUM;
  h.page_size = sizeof(page);
  h.commit = commit;
  h.min_txid = h.max_txid = txid;
  h.timestamp_ms = 1700000000000 + (int64_t)txid;
  ck_assert_int_eq(ltx_encoder_open(&e, &h, ltx_membuf_write, mb, &err), 0);
  for (size_t i = 0; i < n; i++) {
    uint32_t pgno = pgnos ? pgnos[i] : (uint32_t)(i + 1);
    fill(pgno, page, arg);
    ck_assert_msg(ltx_encoder_put(e, pgno, page, &err) == 0, "page %u: %s", pgno, err.msg);
  }
  ck_assert_msg(ltx_encoder_close(e, 0, &err) == 0, "%s", err.msg);
  ltx_encoder_free(e);
}

/* tu_encode_ltx into DIR/ltx/0/<txid>-<txid>.ltx (temporary file, rename). */
static inline void tu_write_ltx(const char *dir, uint64_t txid, uint32_t commit,
                                const uint32_t *pgnos, size_t n, tu_page_fn fill, void *arg) {
  ltx_membuf mb = {0};
  char path[4096], name[64];
  tu_encode_ltx(txid, commit, pgnos, n, fill, arg, &mb);
  snprintf(path, sizeof(path), "%s/ltx/0/%s", dir, ltx_file_name(txid, txid, name));
  ck_assert_int_eq(tu_write_file_atomic(path, mb.buf, mb.len), 0);
  ltx_membuf_free(&mb);
}
#endif
