/*
** check_vfs_large: the "litestream" VFS on a database larger than 1 GiB, read
** on both sides of the lock page (the page at byte offset 0x40000000 that
** SQLite never uses and LTX files never store).
**
** How: plain SQLite (default VFS) builds big.db with 65536-byte pages: a
** small table `s` with an index (low pages), 72 rows of 16 MiB blobs in
** `big` (zeroblob, then a 16-byte pseudo-random marker written every 32 KiB
** with sqlite3_blob_write, so every page's content is distinct), and a
** table `tail` with an index and overflowing rows created last, so its
** b-tree pages lie above the lock page (page 16385). All-zero 4 KiB blocks
** of big.db are then punched out (sparse file, ~150 MB on disk). The LTX
** encoder writes big.db as the snapshot TXID 1 of a file:// replica
** (every page but the lock page, ~15 MB compressed). Then, through the VFS
** (sqlite3_open_v2(..., "litestream")), compared with the plain database:
**   - PRAGMA page_size / page_count (> the lock page) / freelist_count,
**     litestream_txid();
**   - aggregates and index range scans of `s` (below) and `tail` (above),
**     PRAGMA integrity_check(s), integrity_check(tail) and the full
**     integrity_check (every page of the file);
**   - every marker of every blob via sqlite3_blob_read (pages on both sides
**     of the lock page), and SQL hex(substr(b, off, 32)) every 64 KiB
**     around the lock page in the row whose overflow pages surround it
**     (found with dbstat on the plain database), at both ends of the first
**     and the last row;
**   - raw xRead of the VFS file (SQLITE_FCNTL_FILE_POINTER) of every page but
**     the lock page = the bytes of big.db (page 1 but for bytes 24..27 and
**     92..95, which the VFS serves as the TXID), and unaligned reads that
**     straddle the pages next to the lock page.
** Prints TAP-like "ok - ..." lines and "N passed, M failed"; exit 0 / 1, or
** 77 (skip) with less than 2 GB free. Scratch: $top_builddir/tests/tmp/
** check_vfs_large; big.db and the LTX file are deleted at the end. A 280 s
** alarm bounds the run.
**
** Build (the library links no SQLite; the test does):
**   cc -std=c11 -I. tests/check_vfs_large.c .libs/libltvfs_core.a \
**      -lcurl -lcrypto -llz4 -lsqlite3 -lpthread
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "ltvfs.h"
#include "ltx/ltx.h"

#define PS 65536u
#define NBIG 72
#define BLOB_SIZE (16 * 1024 * 1024)
#define STRIDE (32 * 1024)
#define MARK 16

static int npass, nfail;

static void report(int cond, const char *fmt, ...) {
  va_list ap;
  printf("%s - ", cond ? "ok" : "not ok");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
  fflush(stdout);
  if (cond)
    npass++;
  else
    nfail++;
}

static void diag(const char *fmt, ...) {
  va_list ap;
  printf("#   ");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  putchar('\n');
}

static int finish(void) {
  printf("%d passed, %d failed\n", npass, nfail);
  return nfail ? 1 : 0;
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "not ok - finished within the 280 s deadline\n";
  if (write(1, msg, sizeof msg - 1) < 0) _exit(1);
  _exit(1);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/* The marker of blob row k at offset off. */
static void marker(int k, uint32_t off, uint8_t out[MARK]) {
  uint64_t a = splitmix64(((uint64_t)k << 32) ^ off), b = splitmix64(a ^ 0x5bd1e995u);
  memcpy(out, &a, 8);
  memcpy(out + 8, &b, 8);
}

static int exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK) {
    diag("%s: %s", sql, err ? err : sqlite3_errmsg(db));
    sqlite3_free(err);
  }
  return rc;
}

/* Runs sql on db and returns its rows as "a|b ; c|d" (malloc'd), or
** "ERROR: msg". */
static char *query(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  sqlite3_str *s = sqlite3_str_new(NULL);
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL), nrow = 0;
  if (rc == SQLITE_OK) {
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (nrow++) sqlite3_str_appendall(s, " ; ");
      for (int i = 0; i < sqlite3_column_count(st); i++) {
        const char *t = (const char *)sqlite3_column_text(st, i);
        if (i) sqlite3_str_appendchar(s, 1, '|');
        sqlite3_str_appendall(s, t ? t : "");
      }
    }
  }
  if (rc != SQLITE_DONE) {
    sqlite3_str_reset(s);
    sqlite3_str_appendf(s, "ERROR: %s", sqlite3_errmsg(db));
  }
  sqlite3_finalize(st);
  char *r = sqlite3_str_finish(s), *out = strdup(r ? r : "");
  sqlite3_free(r);
  return out;
}

/* Checks that sql gives the same rows on the plain and the VFS database. */
static void same(sqlite3 *plain, sqlite3 *vfs, const char *name, const char *sql) {
  char *want = query(plain, sql), *got = query(vfs, sql);
  int eq = strcmp(want, got) == 0 && strncmp(want, "ERROR", 5) != 0;
  report(eq, "%s", name);
  if (!eq) {
    diag("sql:  %s", sql);
    diag("got:  %.300s", got);
    diag("want: %.300s", want);
  }
  free(want);
  free(got);
}

static int write_fn(void *ctx, const uint8_t *buf, size_t n, ltx_error *err) {
  if (fwrite(buf, 1, n, (FILE *)ctx) != n)
    return ltx_error_set(err, LTX_ERR_IO, "write: %s", strerror(errno));
  return LTX_OK;
}

/* Builds big.db with plain SQLite. */
static int build_db(const char *path) {
  sqlite3 *db = NULL;
  char sql[512];
  int rc = sqlite3_open(path, &db);
  if (rc == SQLITE_OK)
    rc = exec(db, "PRAGMA page_size = 65536; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
                  "PRAGMA cache_size = -65536;"
                  "CREATE TABLE s(id INTEGER PRIMARY KEY, name TEXT, v BLOB);"
                  "INSERT INTO s SELECT i, printf('%08x', (i * 2654435761) % 4294967296),"
                  "  CAST(substr(replace(printf('%.*c', 40, '.'), '.', printf('%08x', i * 40503)), 1,"
                  "  20 + (i * 7919) % 700) AS BLOB)"
                  "  FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000)"
                  "  SELECT i FROM c);"
                  "CREATE INDEX s_name ON s(name);"
                  "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB);");
  for (int k = 1; rc == SQLITE_OK && k <= NBIG; k++) {
    snprintf(sql, sizeof sql, "INSERT INTO big VALUES (%d, zeroblob(%d));", k, BLOB_SIZE);
    rc = exec(db, sql);
  }
  if (rc == SQLITE_OK) rc = exec(db, "BEGIN;");
  for (int k = 1; rc == SQLITE_OK && k <= NBIG; k++) {
    sqlite3_blob *b = NULL;
    rc = sqlite3_blob_open(db, "main", "big", "b", k, 1, &b);
    for (uint32_t off = 0; rc == SQLITE_OK && off < BLOB_SIZE; off += STRIDE) {
      uint8_t m[MARK];
      marker(k, off, m);
      rc = sqlite3_blob_write(b, m, MARK, (int)off);
    }
    if (rc != SQLITE_OK) diag("blob write row %d: %s", k, sqlite3_errmsg(db));
    sqlite3_blob_close(b);
  }
  if (rc == SQLITE_OK) rc = exec(db, "COMMIT;");
  if (rc == SQLITE_OK)
    rc = exec(db, "CREATE TABLE tail(id INTEGER PRIMARY KEY, name TEXT, v BLOB);"
                  "INSERT INTO tail SELECT i, printf('%08x', (i * 40503) % 65536 * 65536 + i),"
                  "  CAST(substr(replace(printf('%.*c', CASE WHEN i % 500 = 0 THEN 12000 ELSE 60 END, '.'),"
                  "  '.', printf('%08x', i * 2654435761 % 4294967296)), 1,"
                  "  CASE WHEN i % 500 = 0 THEN 90000 + i ELSE 30 + (i * 31) % 400 END) AS BLOB)"
                  "  FROM (WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000)"
                  "  SELECT i FROM c);"
                  "CREATE INDEX tail_name ON tail(name);");
  sqlite3_close(db);
  return rc;
}

/* Punches out the all-zero 4 KiB blocks of path (best effort). */
static void make_sparse(const char *path) {
  int fd = open(path, O_RDWR);
  if (fd < 0) return;
  static uint8_t buf[1 << 20];
  static const uint8_t zero[4096];
  off_t pos = 0, hole = -1;
  ssize_t n;
  while ((n = pread(fd, buf, sizeof buf, pos)) > 0) {
    for (ssize_t i = 0; i + 4096 <= n; i += 4096) {
      int z = memcmp(buf + i, zero, 4096) == 0;
      if (z && hole < 0) hole = pos + i;
      if (!z && hole >= 0) {
        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, hole, pos + i - hole)) {
          close(fd);
          return;
        }
        hole = -1;
      }
    }
    pos += n;
  }
  if (hole >= 0) (void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, hole, pos - hole);
  close(fd);
}

/* Writes path (page size PS) as the snapshot TXID 1 into ltx_path. */
static int encode_snapshot(const char *path, const char *ltx_path, uint32_t *commit_out) {
  int fd = open(path, O_RDONLY);
  FILE *out = fopen(ltx_path, "wb");
  struct stat stt;
  ltx_encoder *enc = NULL;
  ltx_error err;
  ltx_header h;
  uint8_t *page = malloc(PS);
  int rc = -1;

  ltx_error_clear(&err);
  if (fd < 0 || !out || !page || fstat(fd, &stt) || stt.st_size % PS) {
    diag("encode: cannot open %s / %s", path, ltx_path);
    goto done;
  }
  memset(&h, 0, sizeof h);
  h.flags = LTX_HEADER_FLAG_NO_CHECKSUM;
  h.page_size = PS;
  h.commit = (uint32_t)(stt.st_size / PS);
  h.min_txid = h.max_txid = 1;
  h.timestamp_ms = (int64_t)time(NULL) * 1000;
  *commit_out = h.commit;
  rc = ltx_encoder_open(&enc, &h, write_fn, out, &err);
  for (uint32_t pg = 1; rc == LTX_OK && pg <= h.commit; pg++) {
    if (pg == ltx_lock_pgno(PS)) continue;
    if (pread(fd, page, PS, (off_t)(pg - 1) * PS) != (ssize_t)PS) {
      diag("encode: short read of page %u", pg);
      rc = -1;
      break;
    }
    rc = ltx_encoder_put(enc, pg, page, &err);
  }
  if (rc == LTX_OK) rc = ltx_encoder_close(enc, 0, &err);
  if (rc > 0) diag("encode: %s", err.msg);
done:
  if (enc) ltx_encoder_free(enc);
  if (out && fclose(out) && rc == 0) rc = -1;
  if (fd >= 0) close(fd);
  free(page);
  return rc;
}

static int mkdirs(const char *path) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
    *p = '/';
  }
  return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

int main(void) {
  const char *top = getenv("top_builddir");
#ifdef TOP_BUILDDIR
  if (!top || !*top) top = TOP_BUILDDIR;
#endif
  if (!top || !*top) top = ".";
  char work[4096], dbpath[4200], repdir[4200], ltxdir[4300], ltxpath[4400], uri[9000], sql[4400];
  char *absw;
  struct statvfs sv;
  double t0 = now_s(), t;
  sqlite3 *plain = NULL, *vfs = NULL;
  uint32_t commit = 0, lock = ltx_lock_pgno(PS);
  int rc;

  signal(SIGALRM, on_alarm);
  alarm(280);
  setvbuf(stdout, NULL, _IOLBF, 0);

  snprintf(work, sizeof work, "%s/tests/tmp/check_vfs_large", top);
  snprintf(sql, sizeof sql, "rm -rf '%s'", work);
  if (system(sql) != 0 || mkdirs(work)) {
    report(0, "create %s", work);
    return finish();
  }
  absw = realpath(work, NULL);
  if (!absw) return report(0, "realpath %s", work), finish();
  if (statvfs(absw, &sv) == 0 && (uint64_t)sv.f_bavail * sv.f_frsize < 2000000000ull) {
    printf("# less than 2 GB free under %s: skipping\n", absw);
    free(absw);
    return 77;
  }
  /* the VFS's local image of this replica lives in the work dir, fresh */
  snprintf(sql, sizeof sql, "%s/cache", absw);
  setenv("LITESTREAM_CACHE_DIR", sql, 1);
  snprintf(dbpath, sizeof dbpath, "%s/big.db", absw);
  snprintf(repdir, sizeof repdir, "%s/replica", absw);
  snprintf(ltxdir, sizeof ltxdir, "%s/ltx/0", repdir);
  snprintf(ltxpath, sizeof ltxpath, "%s/0000000000000001-0000000000000001.ltx", ltxdir);
  free(absw);

  /* ---- the plain database and its snapshot ---- */
  rc = build_db(dbpath);
  report(rc == SQLITE_OK, "build big.db with plain SQLite (%.1f s)", now_s() - t0);
  if (rc != SQLITE_OK) goto out;
  t = now_s();
  make_sparse(dbpath);
  if (mkdirs(ltxdir)) {
    report(0, "create %s", ltxdir);
    goto out;
  }
  rc = encode_snapshot(dbpath, ltxpath, &commit);
  report(rc == 0, "encode big.db as the snapshot TXID 1 (%u pages, %.1f s)", commit, now_s() - t);
  if (rc != 0) goto out;
  report(commit > lock + 1000, "big.db has %u pages, > lock page %u + 1000 (%.2f GiB)", commit,
         lock, commit * (double)PS / (1u << 30));

  /* ---- open both ---- */
  rc = ltvfs_register();
  report(rc == SQLITE_OK, "ltvfs_register() = SQLITE_OK (%d)", rc);
  rc = sqlite3_open_v2(dbpath, &plain, SQLITE_OPEN_READONLY, NULL);
  report(rc == SQLITE_OK, "open big.db (plain)");
  snprintf(uri, sizeof uri, "file:big.db?replica=file://%s", repdir);
  t = now_s();
  rc = sqlite3_open_v2(uri, &vfs, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, "litestream");
  report(rc == SQLITE_OK, "open %s through the VFS (%.2f s)", uri, now_s() - t);
  if (rc != SQLITE_OK) {
    diag("%s", vfs ? sqlite3_errmsg(vfs) : "no handle");
    goto out;
  }
  exec(plain, "PRAGMA cache_size = -16384;");
  exec(vfs, "PRAGMA cache_size = -16384;");

  /* ---- SQL on both ---- */
  {
    char *got = query(vfs, "SELECT litestream_txid();");
    report(strcmp(got, "0000000000000001") == 0, "litestream_txid() = 0000000000000001 (%s)", got);
    free(got);
  }
  same(plain, vfs, "PRAGMA page_size", "PRAGMA page_size;");
  same(plain, vfs, "PRAGMA page_count", "PRAGMA page_count;");
  same(plain, vfs, "PRAGMA freelist_count", "PRAGMA freelist_count;");
  same(plain, vfs, "schema", "SELECT type, name, tbl_name, rootpage FROM sqlite_master ORDER BY name;");
  same(plain, vfs, "s (below the lock page): aggregates",
       "SELECT count(*), sum(id), sum(length(name)), sum(length(v)), hex(min(v)), hex(max(v)) FROM s;");
  same(plain, vfs, "s: index range scan",
       "SELECT count(*), sum(id), min(name), max(name) FROM s INDEXED BY s_name WHERE name >= '80000000';");
  same(plain, vfs, "tail (above the lock page): aggregates",
       "SELECT count(*), sum(id), sum(length(name)), sum(length(v)), hex(min(v)), hex(max(v)) FROM tail;");
  same(plain, vfs, "tail: index range scan",
       "SELECT count(*), sum(id), min(name), max(name) FROM tail INDEXED BY tail_name WHERE name >= '80000000';");
  same(plain, vfs, "tail: overflowing rows",
       "SELECT group_concat(id || ':' || length(v) || ':' || hex(substr(v, length(v) - 9, 10)), ',') "
       "FROM tail WHERE length(v) > 60000;");
  same(plain, vfs, "tail: rowid lookups",
       "SELECT id, name, length(v) FROM tail WHERE id IN (1, 777, 2500, 4999, 5000) ORDER BY id;");
  same(plain, vfs, "big: ids and lengths", "SELECT group_concat(id || ':' || length(b)) FROM big;");
  same(plain, vfs, "PRAGMA integrity_check(s)", "PRAGMA integrity_check(s);");
  same(plain, vfs, "PRAGMA integrity_check(tail)", "PRAGMA integrity_check(tail);");
  {
    char *got = query(vfs, "PRAGMA integrity_check(tail);");
    report(strcmp(got, "ok") == 0, "integrity_check(tail) through the VFS = ok");
    free(got);
  }
  /* SQL substr() loads the whole blob, for every reference to it: so only a
  ** few offsets of rows 1 and NBIG, and of the row whose overflow pages are
  ** next to the lock page (found with dbstat on the plain database: page
  ** lock + 1 is overflow page J of cell C of leaf L; with ids 1..NBIG in
  ** order, the row is the number of cells before L + C + 1) offsets every
  ** 64 KiB from 256 KiB before to 256 KiB after the estimated boundary. */
  t = now_s();
  {
    char *path;
    unsigned cell = 0, ovfl = 0;
    int row = 0;
    snprintf(sql, sizeof sql, "SELECT path FROM dbstat WHERE name = 'big' AND pageno = %u;", lock + 1);
    path = query(plain, sql);
    /* "/LLL/CCC+OOOOOO" */
    if (strlen(path) == 15 && path[4] == '/' && sscanf(path + 5, "%3x+%6x", &cell, &ovfl) == 2) {
      char *cnt;
      snprintf(sql, sizeof sql,
               "SELECT coalesce(sum(ncell), 0) FROM dbstat WHERE name = 'big' AND pagetype = 'leaf' "
               "AND path < '%.5s';", path);
      cnt = query(plain, sql);
      row = atoi(cnt) + (int)cell + 1;
      free(cnt);
    }
    report(row > 0, "dbstat: page %u (above the lock page) is overflow page %s of big row %d", lock + 1,
           path, row);
    free(path);
    if (row > 0) {
      long est = (long)ovfl * (PS - 4);
      sqlite3_str *q = sqlite3_str_new(NULL);
      sqlite3_str_appendall(q, "SELECT length(b)");
      for (long off = est - 4 * 65536; off <= est + 4 * 65536; off += 65536)
        if (off >= 0 && off + 32 <= BLOB_SIZE) sqlite3_str_appendf(q, ", hex(substr(b, %ld, 32))", off + 1);
      sqlite3_str_appendf(q, " FROM big WHERE id = %d;", row);
      char *qs = sqlite3_str_finish(q);
      same(plain, vfs, "big row next to the lock page: hex(substr(b, off, 32)) around it", qs);
      sqlite3_free(qs);
    }
    for (int k = 1; k <= NBIG; k += NBIG - 1) {
      char name[96];
      snprintf(sql, sizeof sql,
               "SELECT length(b), hex(substr(b, 1, 32)), hex(substr(b, %d, 32)) FROM big WHERE id = %d;",
               BLOB_SIZE - 31, k);
      snprintf(name, sizeof name, "big row %d: hex(substr(b, off, 32)) at both ends", k);
      same(plain, vfs, name, sql);
    }
  }
  diag("hex(substr()) took %.1f s", now_s() - t);

  /* ---- every marker via incremental blob I/O ---- */
  t = now_s();
  for (int k = 1; k <= NBIG; k++) {
    sqlite3_blob *bp = NULL, *bv = NULL;
    long bad_p = 0, bad_v = 0, first_bad = -1;
    int rp = sqlite3_blob_open(plain, "main", "big", "b", k, 0, &bp);
    int rv = sqlite3_blob_open(vfs, "main", "big", "b", k, 0, &bv);
    if (rp != SQLITE_OK || rv != SQLITE_OK) {
      report(0, "big row %d: sqlite3_blob_open (plain %d, vfs %d: %s)", k, rp, rv,
             sqlite3_errmsg(vfs));
      sqlite3_blob_close(bp);
      sqlite3_blob_close(bv);
      continue;
    }
    for (uint32_t off = 0; off < BLOB_SIZE; off += STRIDE) {
      uint8_t m[MARK], a[MARK], b[MARK];
      marker(k, off, m);
      if (sqlite3_blob_read(bp, a, MARK, (int)off) != SQLITE_OK || memcmp(a, m, MARK)) bad_p++;
      if ((rv = sqlite3_blob_read(bv, b, MARK, (int)off)) != SQLITE_OK || memcmp(b, m, MARK)) {
        if (first_bad < 0) {
          first_bad = off;
          if (rv != SQLITE_OK) diag("row %d off %u: %s", k, off, sqlite3_errmsg(vfs));
        }
        bad_v++;
      }
    }
    sqlite3_blob_close(bp);
    sqlite3_blob_close(bv);
    report(bad_p == 0 && bad_v == 0, "big row %d: all %d markers read back (plain bad %ld, vfs bad %ld%s)",
           k, BLOB_SIZE / STRIDE, bad_p, bad_v, first_bad >= 0 ? ", see first offset below" : "");
    if (first_bad >= 0) diag("first bad offset through the VFS: %ld", first_bad);
  }
  diag("marker reads took %.1f s", now_s() - t);

  /* ---- raw xRead of every page through the VFS ---- */
  {
    sqlite3_file *f = NULL;
    int pfd = open(dbpath, O_RDONLY);
    uint8_t *a = malloc(PS), *b = malloc(PS), *span_a = malloc(3 * PS), *span_b = malloc(3 * PS);
    long bad = 0, ioerr = 0;
    uint32_t first_bad = 0;
    sqlite3_int64 fsize = -1;
    t = now_s();
    rc = exec(vfs, "BEGIN; SELECT count(*) FROM sqlite_master;");
    if (rc == SQLITE_OK)
      rc = sqlite3_file_control(vfs, "main", SQLITE_FCNTL_FILE_POINTER, &f);
    report(rc == SQLITE_OK && f && f->pMethods, "SQLITE_FCNTL_FILE_POINTER of the VFS file");
    if (rc == SQLITE_OK && f && f->pMethods && pfd >= 0 && a && b && span_a && span_b) {
      rc = f->pMethods->xFileSize(f, &fsize);
      report(rc == SQLITE_OK && fsize == (sqlite3_int64)commit * PS,
             "xFileSize = commit * page size (%lld, want %lld)", (long long)fsize,
             (long long)commit * PS);
      for (uint32_t pg = 1; pg <= commit; pg++) {
        if (pg == lock) continue;
        rc = f->pMethods->xRead(f, a, PS, (sqlite3_int64)(pg - 1) * PS);
        if (rc != SQLITE_OK) ioerr++;
        if (pread(pfd, b, PS, (off_t)(pg - 1) * PS) != (ssize_t)PS) memset(b, 0xEE, PS);
        if (pg == 1) {
          memset(a + 24, 0, 4), memset(b + 24, 0, 4);
          memset(a + 92, 0, 4), memset(b + 92, 0, 4);
        }
        if (rc != SQLITE_OK || memcmp(a, b, PS)) {
          if (!bad) first_bad = pg;
          bad++;
        }
        if (pg == lock - 1 || pg == lock + 1 || pg == commit)
          report(rc == SQLITE_OK && memcmp(a, b, PS) == 0, "xRead of page %u (%s) = big.db", pg,
                 pg == commit ? "the last" : pg < lock ? "just below the lock page"
                                                       : "just above the lock page");
      }
      report(bad == 0, "xRead of every page but the lock page = big.db (%ld differ, %ld errors; %.1f s)",
             bad, ioerr, now_s() - t);
      if (bad) diag("first differing page: %u", first_bad);
      /* Unaligned reads straddling the page boundaries next to the lock page. */
      static const struct {
        uint32_t pg; /* the page whose end the read straddles */
        int back, len;
      } spans[] = {{16383, 100, 200}, {16383, 1, 2}, {16383, 65535, 65537}, {16386, 100, 200},
                   {16386, 4097, 70000}, {16386, 65536, 131072}};
      for (size_t i = 0; i < sizeof spans / sizeof spans[0]; i++) {
        sqlite3_int64 off = (sqlite3_int64)spans[i].pg * PS - spans[i].back;
        int len = spans[i].len;
        rc = f->pMethods->xRead(f, span_a, len, off);
        ssize_t n = pread(pfd, span_b, len, off);
        report(rc == SQLITE_OK && n == len && memcmp(span_a, span_b, len) == 0,
               "unaligned xRead of %d bytes at %lld (across the end of page %u) = big.db", len,
               (long long)off, spans[i].pg);
      }
      /* The lock page itself: SQLite never reads it; report what comes back. */
      rc = f->pMethods->xRead(f, a, PS, (sqlite3_int64)(lock - 1) * PS);
      {
        int zero = 1;
        for (uint32_t i = 0; i < PS; i++) zero &= a[i] == 0;
        printf("# (info) xRead of the lock page %u: rc %d, %s\n", lock, rc,
               zero ? "all zero" : "not all zero");
      }
    }
    exec(vfs, "COMMIT;");
    if (pfd >= 0) close(pfd);
    free(a), free(b), free(span_a), free(span_b);
  }

  /* ---- the full integrity check: every page of the database ---- */
  t = now_s();
  {
    char *got = query(vfs, "PRAGMA integrity_check;");
    report(strcmp(got, "ok") == 0, "PRAGMA integrity_check through the VFS = ok (%.1f s)", now_s() - t);
    if (strcmp(got, "ok")) diag("%.400s", got);
    free(got);
  }

out:
  if (vfs) sqlite3_close(vfs);
  if (plain) sqlite3_close(plain);
  unlink(dbpath);
  unlink(ltxpath);
  printf("# total %.1f s\n", now_s() - t0);
  return finish();
}
