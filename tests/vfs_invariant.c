/*
** vfs_invariant: the snapshot-isolation invariant of the "litestream" VFS
** under a live writer, from many threads of one process.
**
**   vfs_invariant URL --accounts N --total T --done-file PATH [options]
**
** The replica at URL holds a table accounts(id, balance, ...) whose
** count(*) is N and sum(balance) is T in every committed state: an
** independent writer (tests/vfs_invariant.sh drives the Litestream Go VFS)
** keeps committing transfers between accounts, some of them touching every
** page of the table and of an index on balance. Meanwhile this program runs,
** after ltvfs_register(), in the default threading mode:
**
** - --threads K (8) reader threads, each with its own connection
**   "file:inv?replica=URL&poll=MS" (read-only, VFS "litestream") and
**   PRAGMA cache_size = 10, so SQLite's own page cache cannot hold the table
**   and every scan reads its pages through the VFS again, looping:
**     BEGIN;
**     SELECT sum(balance), count(*), litestream_txid() FROM accounts NOT INDEXED;
**     SELECT litestream_txid(), litestream_lag();
**     [every 4th time: sleep 2-3 poll intervals, so the replica publishes
**      newer views while the transaction is open]
**     SELECT sum(balance), count(*) FROM accounts INDEXED BY <the index>
**       WHERE balance > -1e18;          (a second path over other pages)
**     SELECT litestream_txid();
**     COMMIT;
**   In those slow transactions the first scan is slow too: it sums
**   balance + inv_pause(id), a function that sleeps on every 25th row, so
**   the scan's page reads are spread over ~2 poll intervals (a VFS that
**   took pages from a newer view in the middle of a transaction would mix
**   two states in one scan).
** - --pairs P (1) threads, each with TWO connections to the same URL in the
**   one thread, interleaved: the first connection opens a read transaction,
**   then the second, then both read again and commit (roles swap on every
**   round).
**
** Asserted, every transaction: sum = T and count = N on both paths (a torn
** view mixing pages of two TXIDs breaks the sum); one TXID for the whole
** transaction; litestream_lag() >= -1, and >= 0 and <= 5 once a newer TXID
** was seen (the poller is alive); the TXIDs a connection sees never go
** backwards. In a pair thread the TXIDs adopted in the order the transactions
** began never go backwards either, across both connections: they share one
** replica object (one poller, one published view). At the end: once the
** writer put the final TXID (hex) into --done-file, every connection reaches
** it within --final-timeout seconds; every thread saw at least --min-txids
** distinct TXIDs (and so did all threads together); no SQLite call failed.
**
** Options: --poll MS (50), --min-txids K (5), --timeout S (120, the whole
** run), --final-timeout S (20), --ready-file PATH (created once every
** connection has completed one transaction: the writer should start then).
** Output: "ok - ..." / "not ok - ..." lines, "# ..." diagnostics, then
** "N passed, M failed". Exit 0 when all passed, 1 on any violation, 2 on a
** usage error.
**
** Build: cc -std=c11 -I$(top_srcdir) tests/vfs_invariant.c .libs/libltvfs.so
** -lsqlite3 -lpthread (ltvfs_register() is inline in ltvfs.h and needs
** ltvfs_auto_register from the library).
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "ltvfs.h"

#define MAX_MSGS 6      /* violations kept per thread for the report */
#define MAX_TXIDS 65536 /* distinct TXIDs remembered over all threads */

/* ---- options ---- */
static const char *zUrl;
static const char *zDoneFile;
static const char *zReadyFile;
static int nThreads = 8;
static int nPairs = 1;
static int pollMs = 50;
static long long nAccounts = -1;
static long long nTotal = -1;
static int minTxids = 5;
static int timeoutS = 120;
static int finalTimeoutS = 20;

/* ---- state shared by all threads ---- */
static pthread_mutex_t gMutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gCond = PTHREAD_COND_INITIALIZER;
static int gReady;                 /* threads that finished one transaction */
static int gFailedEarly;           /* threads that gave up before that */
static atomic_int gStop;           /* set on the overall deadline */
static atomic_int gFinished;       /* threads that returned */
static _Atomic uint64_t gFinal;    /* the writer's last TXID, 0 = not yet known */
static uint64_t aSeen[MAX_TXIDS];  /* distinct TXIDs seen (unsorted) */
static int nSeen;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static void note_txid(uint64_t txid) {
  pthread_mutex_lock(&gMutex);
  int i;
  for (i = 0; i < nSeen && aSeen[i] != txid; i++) {
  }
  if (i == nSeen && nSeen < MAX_TXIDS) aSeen[nSeen++] = txid;
  pthread_mutex_unlock(&gMutex);
}

/* ---- one connection ---- */
typedef struct Conn {
  sqlite3 *db;
  sqlite3_stmt *pBegin, *pCommit, *pSum, *pSumSlow, *pTx, *pSum2, *pTx2;
  uint64_t firstTx, lastTx; /* 0 until the first transaction */
  long nDistinct;           /* TXIDs this connection adopted */
  int bReachedFinal;
} Conn;

typedef struct Reader {
  int iThread;
  int nConn; /* 1, or 2 for a pair thread */
  Conn aConn[2];
  unsigned rng;
  long nTxn;
  uint64_t lastAdopted; /* pair threads: the last TXID adopted by either connection */
  long nDistinct;       /* distinct TXIDs of the whole thread */
  uint64_t lastDistinct;
  int nFail;
  char aMsg[MAX_MSGS][256];
} Reader;

static void fail(Reader *r, const char *zFmt, ...) {
  if (r->nFail < MAX_MSGS) {
    va_list ap;
    va_start(ap, zFmt);
    vsnprintf(r->aMsg[r->nFail], sizeof r->aMsg[0], zFmt, ap);
    va_end(ap);
  }
  r->nFail++;
}

static unsigned next_rand(Reader *r) {
  r->rng ^= r->rng << 13;
  r->rng ^= r->rng >> 17;
  r->rng ^= r->rng << 5;
  return r->rng;
}

/* URL as a URI query value: everything but unreserved characters escaped. */
static char *uri_escape(const char *z) {
  static const char hex[] = "0123456789ABCDEF";
  char *out = malloc(strlen(z) * 3 + 1), *p = out;
  if (!out) return NULL;
  for (; *z; z++) {
    unsigned char c = (unsigned char)*z;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        strchr("-._~/:", c)) {
      *p++ = (char)c;
    } else {
      *p++ = '%';
      *p++ = hex[c >> 4];
      *p++ = hex[c & 15];
    }
  }
  *p = 0;
  return out;
}

/* inv_pause(x): 0, after sleeping pollMs/40 ms when x is a multiple of 25. */
static void fn_pause(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  if (sqlite3_value_int64(argv[0]) % 25 == 0) {
    struct timespec ts = {0, (long)pollMs * 25000L};
    nanosleep(&ts, NULL);
  }
  sqlite3_result_int(ctx, 0);
}

static int conn_open(Reader *r, Conn *c, const char *zUri) {
  static const char *zSum =
      "SELECT sum(balance), count(*), litestream_txid() FROM accounts NOT INDEXED";
  static const char *zSumSlow =
      "SELECT sum(balance + inv_pause(id)), count(*), litestream_txid() FROM accounts NOT INDEXED";
  static const char *zTx = "SELECT litestream_txid(), litestream_lag()";
  static const char *zSum2 =
      "SELECT sum(balance), count(*) FROM accounts INDEXED BY accounts_balance WHERE balance > -1e18";
  static const char *zTx2 = "SELECT litestream_txid()";
  int rc = sqlite3_open_v2(zUri, &c->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, "litestream");
  if (rc != SQLITE_OK) {
    fail(r, "open %s: %s (rc %d)", zUri, c->db ? sqlite3_errmsg(c->db) : "?", rc);
    return -1;
  }
  rc = sqlite3_create_function(c->db, "inv_pause", 1, SQLITE_UTF8, NULL, fn_pause, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(c->db, "PRAGMA cache_size = 10", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    fail(r, "set up the connection: %s (rc %d)", sqlite3_errmsg(c->db), rc);
    return -1;
  }
  struct {
    sqlite3_stmt **pp;
    const char *z;
  } a[] = {{&c->pBegin, "BEGIN"}, {&c->pCommit, "COMMIT"}, {&c->pSum, zSum},
           {&c->pSumSlow, zSumSlow}, {&c->pTx, zTx}, {&c->pSum2, zSum2}, {&c->pTx2, zTx2}};
  for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) {
    rc = sqlite3_prepare_v2(c->db, a[i].z, -1, a[i].pp, NULL);
    if (rc != SQLITE_OK) {
      fail(r, "prepare \"%s\": %s (rc %d)", a[i].z, sqlite3_errmsg(c->db), rc);
      return -1;
    }
  }
  return 0;
}

static void conn_close(Conn *c) {
  sqlite3_stmt *a[] = {c->pBegin, c->pCommit, c->pSum, c->pSumSlow, c->pTx, c->pSum2, c->pTx2};
  for (size_t i = 0; i < sizeof a / sizeof a[0]; i++) sqlite3_finalize(a[i]);
  sqlite3_close(c->db);
  c->db = NULL;
}

/* Steps a statement that returns no row (BEGIN, COMMIT). */
static int exec_stmt(Reader *r, Conn *c, sqlite3_stmt *p, const char *zWhat) {
  int rc = sqlite3_step(p);
  if (rc != SQLITE_DONE) {
    fail(r, "%s: %s (rc %d)", zWhat, sqlite3_errmsg(c->db), sqlite3_extended_errcode(c->db));
    sqlite3_reset(p);
    return -1;
  }
  sqlite3_reset(p);
  return 0;
}

/* Steps a one-row statement and keeps its row for the caller; call
** sqlite3_reset() afterwards. */
static int row_stmt(Reader *r, Conn *c, sqlite3_stmt *p, const char *zWhat) {
  int rc = sqlite3_step(p);
  if (rc != SQLITE_ROW) {
    fail(r, "%s: %s (rc %d)", zWhat, sqlite3_errmsg(c->db), sqlite3_extended_errcode(c->db));
    sqlite3_reset(p);
    return -1;
  }
  return 0;
}

static int parse_txid(Reader *r, sqlite3_stmt *p, int iCol, uint64_t *pTx, const char *zWhat) {
  const char *z = (const char *)sqlite3_column_text(p, iCol);
  char *zEnd = NULL;
  if (!z || strlen(z) != 16) {
    fail(r, "%s: litestream_txid() = %s, not 16 hex digits", zWhat, z ? z : "NULL");
    return -1;
  }
  errno = 0;
  *pTx = strtoull(z, &zEnd, 16);
  if (errno || *zEnd || *pTx == 0) {
    fail(r, "%s: litestream_txid() = %s, not a TXID", zWhat, z);
    return -1;
  }
  return 0;
}

/* The checks of one aggregate row: sum = nTotal, count = nAccounts. */
static void check_sum(Reader *r, sqlite3_stmt *p, uint64_t tx, const char *zWhat) {
  long long sum = sqlite3_column_int64(p, 0), cnt = sqlite3_column_int64(p, 1);
  if (sqlite3_column_type(p, 0) == SQLITE_NULL || sum != nTotal || cnt != nAccounts) {
    fail(r, "%s at TXID %016" PRIx64 ": sum %lld count %lld, want sum %lld count %lld", zWhat, tx,
         sum, cnt, nTotal, nAccounts);
  }
}

/* Records that c adopted tx at the start of a transaction. */
static void adopted(Reader *r, Conn *c, int iConn, uint64_t tx) {
  if (c->lastTx && tx < c->lastTx) {
    fail(r, "connection %d went backwards: TXID %016" PRIx64 " after %016" PRIx64, iConn, tx,
         c->lastTx);
  }
  if (tx != c->lastTx) c->nDistinct++;
  if (!c->firstTx) c->firstTx = tx;
  c->lastTx = tx;
  if (r->nConn > 1 && r->lastAdopted && tx < r->lastAdopted) {
    fail(r, "connection %d adopted TXID %016" PRIx64 " after the other connection of the thread "
            "had adopted %016" PRIx64 " (not one shared replica view?)",
         iConn, tx, r->lastAdopted);
  }
  if (tx > r->lastAdopted) r->lastAdopted = tx;
  if (tx != r->lastDistinct) {
    r->nDistinct++;
    r->lastDistinct = tx;
    note_txid(tx);
  }
}

/* Opens the read transaction of c and reads the first path (slowly when
** bSlow); *pTx = its TXID. Returns -1 on a failure (the transaction is
** rolled back). */
static int txn_begin(Reader *r, Conn *c, int iConn, int bSlow, uint64_t *pTx) {
  uint64_t tx = 0, txb = 0;
  sqlite3_stmt *pSum = bSlow ? c->pSumSlow : c->pSum;
  if (exec_stmt(r, c, c->pBegin, "BEGIN")) return -1;
  if (row_stmt(r, c, pSum, "first SELECT sum(balance)")) goto abort;
  if (parse_txid(r, pSum, 2, &tx, "first SELECT")) {
    sqlite3_reset(pSum);
    goto abort;
  }
  check_sum(r, pSum, tx, bSlow ? "first SELECT (slow table scan)" : "first SELECT (table)");
  sqlite3_reset(pSum);

  if (row_stmt(r, c, c->pTx, "SELECT litestream_txid(), litestream_lag()")) goto abort;
  if (parse_txid(r, c->pTx, 0, &txb, "SELECT litestream_txid()") == 0 && txb != tx) {
    fail(r, "connection %d: litestream_txid() changed inside a transaction: %016" PRIx64
            " then %016" PRIx64,
         iConn, tx, txb);
  }
  long long lag = sqlite3_column_int64(c->pTx, 1);
  if (sqlite3_column_type(c->pTx, 1) != SQLITE_INTEGER || lag < -1) {
    fail(r, "connection %d: litestream_lag() = %s", iConn,
         sqlite3_column_text(c->pTx, 1) ? (const char *)sqlite3_column_text(c->pTx, 1) : "NULL");
  } else if (c->firstTx && tx > c->firstTx && (lag < 0 || lag > 5)) {
    fail(r, "connection %d: litestream_lag() = %lld after a poll brought TXID %016" PRIx64, iConn,
         lag, tx);
  }
  sqlite3_reset(c->pTx);
  adopted(r, c, iConn, tx);
  *pTx = tx;
  return 0;
abort:
  sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
  return -1;
}

/* Reads the second path inside the open transaction of c (adopted TXID tx),
** checks the TXID again and commits. */
static int txn_end(Reader *r, Conn *c, int iConn, uint64_t tx) {
  uint64_t tx2 = 0;
  if (row_stmt(r, c, c->pSum2, "second SELECT sum(balance) (index)")) goto abort;
  check_sum(r, c->pSum2, tx, "second SELECT (index)");
  sqlite3_reset(c->pSum2);
  if (row_stmt(r, c, c->pTx2, "second SELECT litestream_txid()")) goto abort;
  if (parse_txid(r, c->pTx2, 0, &tx2, "second SELECT litestream_txid()") == 0 && tx2 != tx) {
    fail(r, "connection %d: TXID changed inside a transaction: %016" PRIx64 " at BEGIN, %016" PRIx64
            " later",
         iConn, tx, tx2);
  }
  sqlite3_reset(c->pTx2);
  if (exec_stmt(r, c, c->pCommit, "COMMIT")) goto abort;
  r->nTxn++;
  if (gFinal && tx >= gFinal) c->bReachedFinal = 1;
  return 0;
abort:
  sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
  return -1;
}

static int all_reached(Reader *r) {
  for (int i = 0; i < r->nConn; i++)
    if (!r->aConn[i].bReachedFinal) return 0;
  return 1;
}

static void *reader_main(void *arg) {
  Reader *r = arg;
  char *zEsc = uri_escape(zUrl);
  char *zUri = zEsc ? sqlite3_mprintf("file:inv?replica=%s&poll=%d", zEsc, pollMs) : NULL;
  int bReady = 0;
  double finalAt = 0; /* when this thread learnt the final TXID */
  free(zEsc);
  if (!zUri) {
    fail(r, "out of memory");
    goto done;
  }
  for (int i = 0; i < r->nConn; i++) {
    if (conn_open(r, &r->aConn[i], zUri)) goto done;
  }
  while (!gStop) {
    uint64_t tx0 = 0, tx1 = 0;
    int bSlow = next_rand(r) % 4 == 0; /* hold the transaction over 2-3 polls */
    int nFailBefore = r->nFail;
    if (r->nConn == 1) {
      Conn *c = &r->aConn[0];
      if (txn_begin(r, c, 0, bSlow, &tx0) == 0) {
        if (bSlow) sleep_ms(2 * pollMs + (int)(next_rand(r) % (unsigned)pollMs));
        txn_end(r, c, 0, tx0);
      }
    } else {
      /* Round n: connection n % 2 begins first, the other one second. */
      int a = (int)(r->nTxn / 2 % 2), b = 1 - a;
      Conn *ca = &r->aConn[a], *cb = &r->aConn[b];
      if (txn_begin(r, ca, a, bSlow, &tx0) == 0) {
        if (txn_begin(r, cb, b, 0, &tx1) == 0) {
          if (bSlow) sleep_ms(2 * pollMs + (int)(next_rand(r) % (unsigned)pollMs));
          txn_end(r, ca, a, tx0);
          txn_end(r, cb, b, tx1);
        } else {
          txn_end(r, ca, a, tx0);
        }
      }
    }
    if (!bReady) {
      bReady = 1;
      pthread_mutex_lock(&gMutex);
      gReady++;
      pthread_cond_broadcast(&gCond);
      pthread_mutex_unlock(&gMutex);
    }
    if (r->nFail > nFailBefore && r->nFail > 50) break; /* hopeless: stop flooding */
    if (gFinal && !finalAt) finalAt = now_s();
    if (gFinal && all_reached(r)) break;
    if (finalAt && now_s() - finalAt > finalTimeoutS) break;
    /* Leave some CPU to the writer: 0-2 ms between transactions. */
    sleep_ms((int)(next_rand(r) % 3));
  }
done:
  if (!bReady) {
    pthread_mutex_lock(&gMutex);
    gFailedEarly++;
    pthread_cond_broadcast(&gCond);
    pthread_mutex_unlock(&gMutex);
  }
  for (int i = 0; i < r->nConn; i++)
    if (r->aConn[i].db) conn_close(&r->aConn[i]);
  sqlite3_free(zUri);
  gFinished++;
  return NULL;
}

/* Reads the final TXID from zDoneFile when it exists and is complete. */
static uint64_t read_done_file(void) {
  char buf[64] = {0};
  FILE *f = fopen(zDoneFile, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *zEnd = NULL;
  uint64_t v = strtoull(buf, &zEnd, 16);
  if (zEnd == buf || (*zEnd && *zEnd != '\n')) return 0;
  return v;
}

static void usage(void) {
  fprintf(stderr,
          "usage: vfs_invariant URL --accounts N --total T --done-file PATH [--threads K] [--pairs P]\n"
          "         [--poll MS] [--min-txids K] [--timeout S] [--final-timeout S] [--ready-file PATH]\n");
  exit(2);
}

int main(int argc, char **argv) {
  int pass = 0, nfail = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') {
      if (zUrl) usage();
      zUrl = a;
      continue;
    }
    if (i + 1 >= argc) usage();
    const char *v = argv[++i];
    if (!strcmp(a, "--threads")) nThreads = atoi(v);
    else if (!strcmp(a, "--pairs")) nPairs = atoi(v);
    else if (!strcmp(a, "--poll")) pollMs = atoi(v);
    else if (!strcmp(a, "--accounts")) nAccounts = atoll(v);
    else if (!strcmp(a, "--total")) nTotal = atoll(v);
    else if (!strcmp(a, "--min-txids")) minTxids = atoi(v);
    else if (!strcmp(a, "--timeout")) timeoutS = atoi(v);
    else if (!strcmp(a, "--final-timeout")) finalTimeoutS = atoi(v);
    else if (!strcmp(a, "--done-file")) zDoneFile = v;
    else if (!strcmp(a, "--ready-file")) zReadyFile = v;
    else usage();
  }
  if (!zUrl || !zDoneFile || nAccounts < 0 || nTotal < 0 || nThreads < 0 || nPairs < 0 ||
      nThreads + nPairs == 0 || pollMs <= 0)
    usage();
  setvbuf(stdout, NULL, _IOLBF, 0);

  int rc = ltvfs_register();
  if (rc != SQLITE_OK) {
    printf("not ok - ltvfs_register() = %d\n0 passed, 1 failed\n", rc);
    return 1;
  }
  printf("# sqlite %s, threadsafe=%d; %d reader threads + %d two-connection threads, poll=%d ms\n",
         sqlite3_libversion(), sqlite3_threadsafe(), nThreads, nPairs, pollMs);

  int n = nThreads + nPairs;
  Reader *aR = calloc((size_t)n, sizeof *aR);
  pthread_t *aT = calloc((size_t)n, sizeof *aT);
  if (!aR || !aT) return 1;
  double t0 = now_s();
  for (int i = 0; i < n; i++) {
    aR[i].iThread = i;
    aR[i].nConn = i < nThreads ? 1 : 2;
    aR[i].rng = 0x9e3779b9u * (unsigned)(i + 1) ^ (unsigned)time(NULL);
    if (!aR[i].rng) aR[i].rng = 1;
    if (pthread_create(&aT[i], NULL, reader_main, &aR[i]) != 0) {
      printf("not ok - start thread %d\n", i);
      return 1;
    }
  }

  /* Ready once every thread completed one transaction (or gave up). */
  pthread_mutex_lock(&gMutex);
  while (gReady + gFailedEarly < n && now_s() - t0 < timeoutS) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&gCond, &gMutex, &ts);
  }
  int nReady = gReady;
  pthread_mutex_unlock(&gMutex);
  printf("# %d of %d threads completed a first transaction after %.2f s\n", nReady, n,
         now_s() - t0);
  if (zReadyFile) {
    FILE *f = fopen(zReadyFile, "w");
    if (f) {
      fprintf(f, "%d\n", nReady);
      fclose(f);
    }
  }

  /* Wait for the writer's final TXID, then for the threads. */
  while (!gFinal && now_s() - t0 < timeoutS && gFailedEarly < n) {
    uint64_t v = read_done_file();
    if (v) {
      gFinal = v;
      printf("# writer done: final TXID %016" PRIx64 " after %.2f s\n", v, now_s() - t0);
      break;
    }
    sleep_ms(20);
  }
  if (!gFinal) {
    printf("# no final TXID in %s after %.0f s: stopping the readers\n", zDoneFile, now_s() - t0);
    gStop = 1;
  } else {
    /* The threads stop by themselves, at the latest finalTimeoutS from now;
    ** the overall deadline still holds. */
    while (gFinished < n && now_s() - t0 < timeoutS) sleep_ms(20);
    gStop = 1;
  }
  for (int i = 0; i < n; i++) pthread_join(aT[i], NULL);

  long nTxnAll = 0;
  for (int i = 0; i < n; i++) {
    Reader *r = &aR[i];
    nTxnAll += r->nTxn;
    if (gFinal) {
      for (int k = 0; k < r->nConn; k++) {
        if (!r->aConn[k].bReachedFinal) {
          fail(r, "connection %d never saw the final TXID %016" PRIx64 " (last seen %016" PRIx64
                  ") within %d s",
               k, gFinal, r->aConn[k].lastTx, finalTimeoutS);
        }
      }
    } else {
      fail(r, "the writer never reported its final TXID");
    }
    if (r->nDistinct < minTxids) {
      fail(r, "saw only %ld distinct TXIDs, want >= %d", r->nDistinct, minTxids);
    }
    const char *zKind = r->nConn == 1 ? "reader" : "two-connection reader";
    if (r->nFail == 0) {
      pass++;
      printf("ok - %s thread %d: %ld transactions, %ld distinct TXIDs %016" PRIx64 "..%016" PRIx64
             ", sum and count right on both paths, one TXID per transaction, never backwards, "
             "reached the final TXID\n",
             zKind, i, r->nTxn, r->nDistinct, r->aConn[0].firstTx, r->aConn[0].lastTx);
    } else {
      nfail++;
      printf("not ok - %s thread %d: %d violations in %ld transactions (%ld distinct TXIDs)\n",
             zKind, i, r->nFail, r->nTxn, r->nDistinct);
      for (int k = 0; k < r->nFail && k < MAX_MSGS; k++) printf("#   %s\n", r->aMsg[k]);
    }
  }
  if (nSeen >= minTxids) {
    pass++;
    printf("ok - all threads together saw %d distinct TXIDs (>= %d) in %ld transactions\n", nSeen,
           minTxids, nTxnAll);
  } else {
    nfail++;
    printf("not ok - all threads together saw %d distinct TXIDs, want >= %d\n", nSeen, minTxids);
  }
  printf("# %.2f s\n", now_s() - t0);
  printf("%d passed, %d failed\n", pass, nfail);
  free(aR);
  free(aT);
  return nfail ? 1 : 0;
}
