/*
** bench/bench_read_q.c: the query driver of bench/bench_read.sh.
**
** One process = one measurement, so the replica VFS (ours or the Litestream
** Go VFS) is measured exactly as plain SQLite is: the extension is loaded
** with sqlite3_load_extension() (no link-time dependency on libltvfs), the
** database is opened read-only through sqlite3_open_v2() with a URI, and the
** same prepared statements run on every side.
**
** usage: bench_read_q [-x EXT.so] MODE ARGS...
**   load                      load EXT into a :memory: connection;
**                             prints "load_us=N"
**   point URI ID              open URI, run "SELECT ... WHERE id = ID" once;
**                             prints "open_first_us=N len=L"
**   scan URI [BUDGET_S]       open URI, step through every row of t
**                             (SELECT id, length(payload) FROM t), stopping
**                             early after BUDGET_S seconds when given;
**                             prints "rows=N sum=S us=T complete=0|1"
**   warm URI N MAXID SEED PASSES [BUDGET_S]
**                             N random point queries (ids 1..MAXID from a
**                             fixed xorshift sequence) as a warm-up, then the
**                             same N queries PASSES times, timed; each query
**                             is its own read transaction (autocommit), as an
**                             app would issue them. Prints "queries=N us=T
**                             qps=Q warmup_us=W complete=0|1 missing=M"
**                             (M: ids without a row in the timed passes);
**                             with BUDGET_S the warm-up and the timed passes
**                             each stop after that many seconds.
** Every mode but load then prints "stats=JSON" when the connection has
** ltvfs_stats() (ours), nothing otherwise.
** URI is opened with SQLITE_OPEN_READONLY | SQLITE_OPEN_URI; pick the VFS in
** the URI (vfs=litestream). Exit status 0 on success, 1 on any error.
*/
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what, sqlite3 *db) {
  fprintf(stderr, "bench_read_q: %s: %s\n", what, db ? sqlite3_errmsg(db) : "(no connection)");
  exit(1);
}

/* Loads ext into a throw-away :memory: connection (a VFS registers itself
** process-wide). Returns the time it took in microseconds. */
static int64_t load_ext(const char *ext) {
  sqlite3 *mem = NULL;
  char *err = NULL;
  if (sqlite3_open(":memory:", &mem) != SQLITE_OK) die("open :memory:", mem);
  sqlite3_enable_load_extension(mem, 1);
  int64_t t0 = now_us();
  if (sqlite3_load_extension(mem, ext, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "bench_read_q: load %s: %s\n", ext, err ? err : "?");
    exit(1);
  }
  int64_t t = now_us() - t0;
  sqlite3_free(err);
  sqlite3_close(mem);
  return t;
}

static sqlite3 *open_db(const char *uri) {
  sqlite3 *db = NULL;
  if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL) != SQLITE_OK) die(uri, db);
  return db;
}

static sqlite3_stmt *prepare(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) die(sql, db);
  return st;
}

/* Prints "stats=JSON" when the connection knows ltvfs_stats(). */
static void print_stats(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, "SELECT ltvfs_stats()", -1, &st, NULL) != SQLITE_OK) return;
  if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
    printf("stats=%s\n", (const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
}

static uint64_t rng;
static uint64_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

/* One point query; returns the payload length (-1: no row). */
static int point(sqlite3 *db, sqlite3_stmt *st, int64_t id) {
  int len = -1, rc;
  sqlite3_bind_int64(st, 1, id);
  if ((rc = sqlite3_step(st)) == SQLITE_ROW) len = sqlite3_column_bytes(st, 1);
  else if (rc != SQLITE_DONE) die("point query", db);
  sqlite3_reset(st);
  return len;
}

/* One pass of n queries from the sequence seeded by seed; stops at deadline
** (0: none). Returns the number of queries done. */
static long warm_pass(sqlite3 *db, sqlite3_stmt *st, long n, int64_t maxid, uint64_t seed,
                      int64_t deadline, long *missing) {
  long i;
  rng = seed ? seed : 88172645463325252ULL;
  for (i = 0; i < n; i++) {
    if (deadline && (i & 63) == 0 && now_us() > deadline) break;
    if (point(db, st, (int64_t)(next_rand() % (uint64_t)maxid) + 1) < 0) (*missing)++;
  }
  return i;
}

int main(int argc, char **argv) {
  const char *ext = NULL;
  int a = 1;
  if (a + 1 < argc && strcmp(argv[a], "-x") == 0) {
    ext = argv[a + 1];
    a += 2;
  }
  if (a >= argc) {
    fprintf(stderr, "usage: bench_read_q [-x EXT.so] load | point URI ID | scan URI [BUDGET_S] |"
                    " warm URI N MAXID SEED PASSES [BUDGET_S]\n");
    return 2;
  }
  const char *mode = argv[a++];
  if (strcmp(mode, "load") == 0) {
    if (!ext) {
      fprintf(stderr, "bench_read_q: load needs -x EXT\n");
      return 2;
    }
    printf("load_us=%lld\n", (long long)load_ext(ext));
    return 0;
  }
  if (ext) load_ext(ext);
  if (a >= argc) {
    fprintf(stderr, "bench_read_q: %s needs a URI\n", mode);
    return 2;
  }
  const char *uri = argv[a++];

  if (strcmp(mode, "point") == 0 && a < argc) {
    int64_t id = atoll(argv[a]);
    int64_t t0 = now_us();
    sqlite3 *db = open_db(uri);
    sqlite3_stmt *st = prepare(db, "SELECT id, payload FROM t WHERE id = ?1");
    int len = point(db, st, id);
    int64_t t = now_us() - t0;
    printf("open_first_us=%lld len=%d\n", (long long)t, len);
    sqlite3_finalize(st);
    print_stats(db);
    sqlite3_close(db);
    return len < 0;
  }

  if (strcmp(mode, "scan") == 0) {
    double budget = a < argc ? atof(argv[a]) : 0;
    int64_t t0 = now_us(), deadline = budget > 0 ? t0 + (int64_t)(budget * 1e6) : 0;
    sqlite3 *db = open_db(uri);
    sqlite3_stmt *st = prepare(db, "SELECT id, length(payload) FROM t");
    long long rows = 0, sum = 0;
    int rc, complete = 1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      rows++;
      sum += sqlite3_column_int64(st, 1);
      if (deadline && (rows & 255) == 0 && now_us() > deadline) {
        complete = 0;
        break;
      }
    }
    if (complete && rc != SQLITE_DONE) die("scan", db);
    int64_t t = now_us() - t0;
    printf("rows=%lld sum=%lld us=%lld complete=%d\n", rows, sum, (long long)t, complete);
    sqlite3_finalize(st);
    print_stats(db);
    sqlite3_close(db);
    return 0;
  }

  if (strcmp(mode, "warm") == 0 && a + 3 < argc) {
    long n = atol(argv[a]);
    int64_t maxid = atoll(argv[a + 1]);
    uint64_t seed = strtoull(argv[a + 2], NULL, 10);
    long passes = atol(argv[a + 3]);
    double budget = a + 4 < argc ? atof(argv[a + 4]) : 0;
    long missing = 0, done = 0, p;
    if (n <= 0 || maxid <= 0 || passes <= 0) {
      fprintf(stderr, "bench_read_q: warm needs N, MAXID and PASSES > 0\n");
      return 2;
    }
    sqlite3 *db = open_db(uri);
    sqlite3_stmt *st = prepare(db, "SELECT id, payload FROM t WHERE id = ?1");
    int64_t t0 = now_us();
    long w = warm_pass(db, st, n, maxid, seed, budget > 0 ? t0 + (int64_t)(budget * 1e6) : 0, &missing);
    int64_t t1 = now_us(), deadline = budget > 0 ? t1 + (int64_t)(budget * 1e6) : 0;
    missing = 0;
    for (p = 0; p < passes; p++) {
      long k = warm_pass(db, st, n, maxid, seed, deadline, &missing);
      done += k;
      if (k < n) break;
    }
    int64_t t = now_us() - t1;
    printf("queries=%ld us=%lld qps=%.0f warmup_us=%lld complete=%d missing=%ld\n", done, (long long)t,
           t > 0 ? done * 1e6 / (double)t : 0.0, (long long)(t1 - t0), w == n && done == n * passes,
           missing);
    sqlite3_finalize(st);
    print_stats(db);
    sqlite3_close(db);
    return 0;
  }

  fprintf(stderr, "bench_read_q: bad mode or arguments: %s\n", mode);
  return 2;
}
