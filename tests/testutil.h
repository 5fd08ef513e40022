/*
** testutil.h: small helpers shared by the Check suites (check_ltx.c,
** check_store.c, check_cache.c, ...).
**
** Header-only and layer-neutral: whole-file reads and writes, paths of the
** fixtures under TOP_SRCDIR "/tests/fixtures" (TOP_SRCDIR comes from the
** Makefile), temporary directories that a test removes again, a growable
** byte buffer, a seeded random generator so a failure reproduces, and
** SHA-256 for the img_sha256 column of expected.tsv. All
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

/* SHA-256 (FIPS 180-4) of n bytes as 64 lowercase hex digits into hex[65]:
** expected.tsv gives restored images as img_sha256. Returns hex. */
static inline uint32_t tu_sha256_rotr(uint32_t x, int n) { return x >> n | x << (32 - n); }

static inline void tu_sha256_block(uint32_t h[8], const uint8_t *p) {
  static const uint32_t k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
      0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
      0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
      0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
      0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
      0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
      0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
      0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
      0xc67178f2};
  uint32_t w[64], a[8];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
           p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = tu_sha256_rotr(w[i - 15], 7) ^ tu_sha256_rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = tu_sha256_rotr(w[i - 2], 17) ^ tu_sha256_rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  memcpy(a, h, sizeof(a));
  for (int i = 0; i < 64; i++) {
    uint32_t s1 = tu_sha256_rotr(a[4], 6) ^ tu_sha256_rotr(a[4], 11) ^ tu_sha256_rotr(a[4], 25);
    uint32_t ch = (a[4] & a[5]) ^ (~a[4] & a[6]);
    uint32_t t1 = a[7] + s1 + ch + k[i] + w[i];
    uint32_t s0 = tu_sha256_rotr(a[0], 2) ^ tu_sha256_rotr(a[0], 13) ^ tu_sha256_rotr(a[0], 22);
    uint32_t mj = (a[0] & a[1]) ^ (a[0] & a[2]) ^ (a[1] & a[2]);
    memmove(a + 1, a, 7 * sizeof(uint32_t));
    a[4] += t1;
    a[0] = t1 + s0 + mj;
  }
  for (int i = 0; i < 8; i++) h[i] += a[i];
}

static inline char *tu_sha256_hex(const void *data, size_t n, char hex[65]) {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const uint8_t *p = data;
  uint8_t last[128];
  size_t rest = n % 64, tail_len = rest < 56 ? 64 : 128;
  uint64_t bits = (uint64_t)n * 8;
  for (size_t i = 0; i + 64 <= n; i += 64) tu_sha256_block(h, p + i);
  memset(last, 0, sizeof(last));
  if (rest > 0) memcpy(last, p + n - rest, rest);
  last[rest] = 0x80;
  for (int i = 0; i < 8; i++) last[tail_len - 1 - (size_t)i] = (uint8_t)(bits >> (8 * i));
  tu_sha256_block(h, last);
  if (tail_len == 128) tu_sha256_block(h, last + 64);
  for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", h[i]);
  return hex;
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
