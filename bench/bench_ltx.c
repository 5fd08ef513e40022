/*
** bench_ltx.c: how close LTX decoding comes to raw LZ4.
**
** Every byte a reader gets out of an LTX file has gone through
** LZ4_decompress_safe; that call is the physical limit of any decoder. What
** the LTX layer adds (frame parsing, pgno/order checks, the CRC-64 of every
** decompressed byte for the file checksum, the page index) should cost
** little: the target is decode+verify (ltx_verify_buffer) at >= 0.8x the
** page throughput of raw LZ4 on the same blocks.
**
** Method:
**   1. Build a realistic SQLite database in memory with the sqlite3 API (a
**      messaging-app shape: users, threads of messages with English-like
**      text, JSON-ish metadata, some incompressible attachments, secondary
**      indexes), about --size-mb MB, and take its pages with
**      sqlite3_serialize.
**   2. Encode them as one LTX snapshot in memory (ltx_encoder_*).
**   3. Time, best of --runs runs (default 10) on a monotonic clock, each
**      run covering at least MIN_RUN_BYTES of page data, the paths
**      interleaved run by run:
**        raw LZ4          LZ4_decompress_safe of every frame's block (found
**                         through the page index) into one page buffer
**        frame decode     ltx_frame_decode of every index entry (the
**                         random-access path the VFS uses)
**        verify buffer    ltx_verify_buffer on the whole file: every frame,
**                         index, trailer, file checksum        <- the target
**        decoder stream   ltx_decoder_open/next/finish from a memory reader
**                         (the restore path), file checksum included
**        crc64            ltx_crc64 alone over all decompressed page bytes
**        crc64 slice8     the same with the portable fallback forced
**        LZ4 + crc64      raw LZ4 then ltx_crc64 of each page: what verify
**                         would cost with zero LTX overhead
**   4. The same on the LTX fixture files (real Litestream output, small), if
**      found: --fixtures DIR, default tests/fixtures or
**      ../shared/fixtures/main.
**
** MB/s are 10^6 bytes of decompressed page data per second. The ratio column
** is throughput / raw LZ4 throughput; for the CRC rows it says how many
** times faster than LZ4 the checksum is.
**
** Usage: bench/bench_ltx [--size-mb N] [--runs N] [--page-size N]
**                        [--fixtures DIR] [--only TEXT]
** --only times just the rows whose name contains TEXT (and raw LZ4, the
** baseline), e.g. `perf record bench/bench_ltx --only verify --runs 50`.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* clock_gettime, nftw */
#endif
#include "config.h"

#include <ftw.h>
#include <lz4.h>
#include <lz4frame.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ltx/ltx.h"

#define TARGET_RATIO 0.8
#define MIN_RUN_BYTES (64ull << 20)  /* page data per timed run */

static volatile uint64_t g_sink; /* keeps results alive */

static double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const ltx_error *err) {
  fprintf(stderr, "bench_ltx: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
  exit(1);
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- a dataset: one or more LTX files held in memory ---- */

typedef struct ltx_file {
  uint8_t *buf;
  size_t n;
  ltx_header h;
  ltx_index idx;
} ltx_file;

typedef struct dataset {
  const char *name;
  ltx_file *files;
  size_t n_files;
  uint64_t page_bytes;  /* decompressed page data over all files */
  uint64_t file_bytes;
  size_t n_pages;
  uint32_t max_page_size;
} dataset;

static void dataset_add(dataset *ds, uint8_t *buf, size_t n) {
  ltx_error err;
  ltx_file f = {.buf = buf, .n = n};
  size_t need = 0;
  if (n < LTX_HEADER_SIZE) die("file shorter than a header", NULL);
  if (ltx_header_decode(buf, &f.h, &err)) die("header", &err);
  if (ltx_index_parse_tail(buf, n, n, &f.idx, &need, &err)) die("page index", &err);
  ds->files = realloc(ds->files, (ds->n_files + 1) * sizeof *ds->files);
  if (!ds->files) die("out of memory", NULL);
  ds->files[ds->n_files++] = f;
  ds->page_bytes += (uint64_t)f.idx.n * f.h.page_size;
  ds->file_bytes += n;
  ds->n_pages += f.idx.n;
  if (f.h.page_size > ds->max_page_size) ds->max_page_size = f.h.page_size;
}

static void dataset_free(dataset *ds) {
  for (size_t i = 0; i < ds->n_files; i++) {
    ltx_index_free(&ds->files[i].idx);
    free(ds->files[i].buf);
  }
  free(ds->files);
}

/* ---- 1. a realistic SQLite database ---- */

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static const char *const k_words[] = {
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on",
    "are", "with", "as", "I", "his", "they", "be", "at", "one", "have", "this", "from", "or",
    "had", "by", "hot", "word", "but", "what", "some", "we", "can", "out", "other", "were",
    "all", "there", "when", "up", "use", "your", "how", "said", "an", "each", "she", "which",
    "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write",
    "would", "like", "so", "these", "her", "long", "make", "thing", "see", "him", "two", "has",
    "look", "more", "day", "could", "go", "come", "did", "number", "sound", "no", "most",
    "people", "my", "over", "know", "water", "than", "call", "first", "who", "may", "down",
    "side", "been", "now", "find", "meeting", "tomorrow", "deploy", "release", "invoice",
    "customer", "ticket", "review", "thanks", "please", "schedule", "budget", "report",
    "server", "database", "replica", "snapshot", "backup", "restore", "latency", "weekend"};
#define N_WORDS (sizeof k_words / sizeof k_words[0])

/* English-like text: skewed word frequencies, so it compresses the way chat
** messages and notes do (about 2-3x with LZ4). */
static size_t make_text(char *out, size_t cap, size_t want) {
  size_t n = 0;
  while (n + 16 < cap && n < want) {
    uint64_t r = rng();
    size_t w = (size_t)((r % N_WORDS) * ((r >> 20) % N_WORDS) / N_WORDS);
    size_t len = strlen(k_words[w]);
    if (n + len + 2 >= cap) break;
    memcpy(out + n, k_words[w], len);
    n += len;
    out[n++] = (r >> 40) % 11 == 0 ? '.' : ' ';
  }
  out[n] = 0;
  return n;
}

static void sql_exec(sqlite3 *db, const char *sql) {
  char *msg = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    fprintf(stderr, "bench_ltx: sqlite: %s: %s\n", sql, msg ? msg : "?");
    exit(1);
  }
}

/* Returns the serialized database (sqlite3_malloc'd) and its size. */
static unsigned char *build_sqlite_db(unsigned size_mb, unsigned page_size, sqlite3_int64 *size) {
  sqlite3 *db;
  sqlite3_stmt *ins_user, *ins_msg, *count;
  char sql[128], text[4096], meta[512], blob[8192];
  uint64_t target = (uint64_t)size_mb << 20;
  int64_t id = 0;

  if (sqlite3_open(":memory:", &db) != SQLITE_OK) die("sqlite3_open", NULL);
  snprintf(sql, sizeof sql, "PRAGMA page_size=%u", page_size);
  sql_exec(db, sql);
  sql_exec(db, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
               "CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, email TEXT UNIQUE,"
               "  created_at INTEGER, karma REAL);"
               "CREATE TABLE messages(id INTEGER PRIMARY KEY, thread_id INTEGER, user_id INTEGER,"
               "  created_at INTEGER, body TEXT, meta TEXT, attachment BLOB);"
               "CREATE INDEX messages_thread ON messages(thread_id, created_at);"
               "CREATE INDEX messages_user ON messages(user_id);"
               "BEGIN;");
  if (sqlite3_prepare_v2(db, "INSERT INTO users VALUES(?,?,?,?,?)", -1, &ins_user, NULL) ||
      sqlite3_prepare_v2(db, "INSERT INTO messages VALUES(NULL,?,?,?,?,?,?)", -1, &ins_msg,
                         NULL) ||
      sqlite3_prepare_v2(db, "PRAGMA page_count", -1, &count, NULL))
    die(sqlite3_errmsg(db), NULL);

  for (int u = 1; u <= 5000; u++) {
    char name[64], email[96];
    snprintf(name, sizeof name, "%s %s", k_words[rng() % N_WORDS], k_words[rng() % N_WORDS]);
    snprintf(email, sizeof email, "user%d.%s@example.com", u, k_words[rng() % N_WORDS]);
    sqlite3_bind_int(ins_user, 1, u);
    sqlite3_bind_text(ins_user, 2, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(ins_user, 3, email, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(ins_user, 4, 1600000000 + (int64_t)(rng() % 100000000));
    sqlite3_bind_double(ins_user, 5, (double)(rng() % 100000) / 100.0);
    if (sqlite3_step(ins_user) != SQLITE_DONE) die(sqlite3_errmsg(db), NULL);
    sqlite3_reset(ins_user);
  }

  for (;;) {
    for (int i = 0; i < 1000; i++, id++) {
      uint64_t r = rng();
      size_t body_len = 20 + (size_t)(r % 100) * (size_t)((r >> 8) % 30); /* mostly short */
      make_text(text, sizeof text, body_len);
      snprintf(meta, sizeof meta,
               "{\"client\":\"app/%u.%u\",\"read\":%s,\"reactions\":[%u,%u],\"lang\":\"en\"}",
               (unsigned)(r >> 16) % 9, (unsigned)(r >> 20) % 30, (r >> 24) & 1 ? "true" : "false",
               (unsigned)(r >> 28) % 50, (unsigned)(r >> 36) % 7);
      sqlite3_bind_int64(ins_msg, 1, (int64_t)(r >> 44) % 20000);
      sqlite3_bind_int64(ins_msg, 2, 1 + (int64_t)((r >> 12) % 5000));
      sqlite3_bind_int64(ins_msg, 3, 1700000000 + id * 7);
      sqlite3_bind_text(ins_msg, 4, text, -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(ins_msg, 5, meta, -1, SQLITE_TRANSIENT);
      if (r % 100 < 8) { /* 8% carry an attachment: photos, already compressed */
        size_t n = 500 + (size_t)(rng() % 6000);
        for (size_t k = 0; k < n; k += 8) {
          uint64_t v = rng();
          memcpy(blob + k, &v, 8);
        }
        sqlite3_bind_blob(ins_msg, 6, blob, (int)n, SQLITE_TRANSIENT);
      } else {
        sqlite3_bind_null(ins_msg, 6);
      }
      if (sqlite3_step(ins_msg) != SQLITE_DONE) die(sqlite3_errmsg(db), NULL);
      sqlite3_reset(ins_msg);
    }
    if (sqlite3_step(count) != SQLITE_ROW) die(sqlite3_errmsg(db), NULL);
    uint64_t pages = (uint64_t)sqlite3_column_int64(count, 0);
    sqlite3_reset(count);
    if (pages * page_size >= target) break;
  }
  sql_exec(db, "COMMIT;");
  sqlite3_finalize(ins_user);
  sqlite3_finalize(ins_msg);
  sqlite3_finalize(count);

  unsigned char *img = sqlite3_serialize(db, "main", size, 0);
  if (!img) die("sqlite3_serialize", NULL);
  sqlite3_close(db);
  return img;
}

/* ---- 2. encode an LTX snapshot into memory ---- */

static void encode_snapshot(const uint8_t *img, size_t size, uint32_t page_size, ltx_membuf *out) {
  ltx_error err;
  ltx_encoder *e = NULL;
  ltx_header h;
  memset(&h, 0, sizeof h);
  h.flags = LTX_HEADER_FLAG_NO_CHECKSUM;
  h.page_size = page_size;
  h.commit = (uint32_t)(size / page_size);
  h.min_txid = 1;
  h.max_txid = 1;
  h.timestamp_ms = 1700000000000;
  if (ltx_encoder_open(&e, &h, ltx_membuf_write, out, &err)) die("ltx_encoder_open", &err);
  for (uint32_t pgno = 1; pgno <= h.commit; pgno++) {
    if (pgno == ltx_lock_pgno(page_size)) continue;
    if (ltx_encoder_put(e, pgno, img + (size_t)(pgno - 1) * page_size, &err))
      die("ltx_encoder_put", &err);
  }
  if (ltx_encoder_close(e, 0, &err)) die("ltx_encoder_close", &err);
  ltx_encoder_free(e);
}

/* ---- 3. the timed paths ---- */

typedef struct bench_ctx {
  const dataset *ds;
  uint8_t *page;        /* one page buffer, max_page_size */
  uint8_t *all_pages;   /* every page decompressed, for the CRC-only rows */
  LZ4F_dctx *dctx;      /* raw path on legacy frames */
} bench_ctx;

/* Raw LZ4 on one frame; legacy frames (LZ4F) through a reused context. */
static int raw_decode(bench_ctx *c, const uint8_t *frame, uint32_t size, uint32_t page_size,
                      uint8_t *page) {
  if (((unsigned)frame[4] << 8 | frame[5]) & LTX_PAGE_FLAG_SIZE) {
    uint32_t csize = be32(frame + LTX_FRAME_HEADER_SIZE);
    return LZ4_decompress_safe((const char *)frame + LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE,
                               (char *)page, (int)csize, (int)page_size);
  }
  size_t dst = page_size, src = size - LTX_FRAME_HEADER_SIZE;
  LZ4F_resetDecompressionContext(c->dctx);
  size_t rc = LZ4F_decompress(c->dctx, page, &dst, frame + LTX_FRAME_HEADER_SIZE, &src, NULL);
  return LZ4F_isError(rc) || rc != 0 ? -1 : (int)dst;
}

static void path_raw_lz4(bench_ctx *c) {
  uint64_t s = 0;
  for (size_t f = 0; f < c->ds->n_files; f++) {
    const ltx_file *lf = &c->ds->files[f];
    for (size_t i = 0; i < lf->idx.n; i++) {
      const ltx_page_entry *pe = &lf->idx.entries[i];
      int got = raw_decode(c, lf->buf + pe->offset, pe->size, lf->h.page_size, c->page);
      if (got != (int)lf->h.page_size) die("raw LZ4 decode failed", NULL);
      s += c->page[0];
    }
  }
  g_sink += s;
}

static void path_frame_decode(bench_ctx *c) {
  ltx_error err;
  uint64_t s = 0;
  for (size_t f = 0; f < c->ds->n_files; f++) {
    const ltx_file *lf = &c->ds->files[f];
    for (size_t i = 0; i < lf->idx.n; i++) {
      const ltx_page_entry *pe = &lf->idx.entries[i];
      if (ltx_frame_decode(lf->buf + pe->offset, pe->size, pe->pgno, lf->h.page_size, c->page,
                           &err))
        die("ltx_frame_decode", &err);
      s += c->page[0];
    }
  }
  g_sink += s;
}

static void path_verify_buffer(bench_ctx *c) {
  ltx_error err;
  ltx_trailer t;
  for (size_t f = 0; f < c->ds->n_files; f++) {
    const ltx_file *lf = &c->ds->files[f];
    if (ltx_verify_buffer(lf->buf, lf->n, NULL, &t, &err)) die("ltx_verify_buffer", &err);
    g_sink += t.file_checksum;
  }
}

typedef struct memreader {
  const uint8_t *p;
  size_t n, off;
} memreader;

static int memreader_read(void *ctx, uint8_t *buf, size_t n, size_t *nread, ltx_error *err) {
  memreader *m = ctx;
  (void)err;
  if (n > m->n - m->off) n = m->n - m->off;
  memcpy(buf, m->p + m->off, n);
  m->off += n;
  *nread = n;
  return LTX_OK;
}

static void path_decoder_stream(bench_ctx *c) {
  ltx_error err;
  for (size_t f = 0; f < c->ds->n_files; f++) {
    const ltx_file *lf = &c->ds->files[f];
    memreader m = {lf->buf, lf->n, 0};
    ltx_decoder *d = NULL;
    ltx_trailer t;
    uint32_t pgno;
    int rc;
    if (ltx_decoder_open(&d, memreader_read, &m, &err)) die("ltx_decoder_open", &err);
    while ((rc = ltx_decoder_next(d, &pgno, c->page, &err)) == LTX_OK) g_sink += pgno;
    if (rc != LTX_DONE) die("ltx_decoder_next", &err);
    if (ltx_decoder_finish(d, &t, NULL, &err)) die("ltx_decoder_finish", &err);
    ltx_decoder_free(d);
    g_sink += t.file_checksum;
  }
}

static void crc_pages(bench_ctx *c, int impl) {
  uint64_t crc = 0;
  const uint8_t *p = c->all_pages;
  for (size_t f = 0; f < c->ds->n_files; f++) {
    uint32_t ps = c->ds->files[f].h.page_size;
    for (size_t i = 0; i < c->ds->files[f].idx.n; i++, p += ps)
      crc = impl < 0 ? ltx_crc64(crc, p, ps) : ltx_crc64_impl(impl, crc, p, ps);
  }
  g_sink += crc;
}
static void path_crc(bench_ctx *c) { crc_pages(c, -1); }
static void path_crc_slice8(bench_ctx *c) { crc_pages(c, 0); }

static void path_lz4_plus_crc(bench_ctx *c) {
  uint64_t crc = 0;
  for (size_t f = 0; f < c->ds->n_files; f++) {
    const ltx_file *lf = &c->ds->files[f];
    for (size_t i = 0; i < lf->idx.n; i++) {
      const ltx_page_entry *pe = &lf->idx.entries[i];
      if (raw_decode(c, lf->buf + pe->offset, pe->size, lf->h.page_size, c->page) !=
          (int)lf->h.page_size)
        die("raw LZ4 decode failed", NULL);
      crc = ltx_crc64(crc, lf->buf + pe->offset, LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE);
      crc = ltx_crc64(crc, c->page, lf->h.page_size);
    }
  }
  g_sink += crc;
}

/* One run: the path repeated until MIN_RUN_BYTES of page data; seconds. */
static double time_run(bench_ctx *c, void (*fn)(bench_ctx *)) {
  uint64_t reps = (MIN_RUN_BYTES + c->ds->page_bytes - 1) / c->ds->page_bytes;
  double t0 = now_sec();
  for (uint64_t k = 0; k < reps; k++) fn(c);
  return (now_sec() - t0) / (double)reps;
}

typedef struct bench_row {
  const char *name;
  void (*fn)(bench_ctx *);
} bench_row;

static const bench_row k_rows[] = {
    {"raw LZ4_decompress_safe (the limit)", path_raw_lz4},
    {"ltx_frame_decode, every index entry", path_frame_decode},
    {"ltx_verify_buffer (decode + verify)", path_verify_buffer},
    {"ltx_decoder stream (decode + verify)", path_decoder_stream},
    {"crc64 alone over page data", path_crc},
    {"crc64 slice8 fallback alone", path_crc_slice8},
    {"LZ4 + crc64, zero LTX overhead", path_lz4_plus_crc},
};
#define N_ROWS (sizeof k_rows / sizeof k_rows[0])
#define ROW_VERIFY 2

/* Decompresses everything once (checked against expect when given: the
** original database image) and prints the table. Returns verify's ratio. */
static const char *g_only; /* --only: time just the rows matching this */

static int row_wanted(size_t r) { return r == 0 || !g_only || strstr(k_rows[r].name, g_only); }

static double run_dataset(const dataset *ds, unsigned runs, const uint8_t *expect) {
  bench_ctx c = {.ds = ds};
  double mbs[N_ROWS];
  c.page = malloc(ds->max_page_size);
  c.all_pages = malloc(ds->page_bytes ? ds->page_bytes : 1);
  if (!c.page || !c.all_pages) die("out of memory", NULL);
  if (LZ4F_isError(LZ4F_createDecompressionContext(&c.dctx, LZ4F_VERSION))) die("LZ4F", NULL);

  uint8_t *p = c.all_pages;
  for (size_t f = 0; f < ds->n_files; f++) {
    const ltx_file *lf = &ds->files[f];
    for (size_t i = 0; i < lf->idx.n; i++, p += lf->h.page_size) {
      const ltx_page_entry *pe = &lf->idx.entries[i];
      if (raw_decode(&c, lf->buf + pe->offset, pe->size, lf->h.page_size, p) !=
          (int)lf->h.page_size)
        die("raw LZ4 decode failed", NULL);
      if (expect && memcmp(p, expect + (size_t)(pe->pgno - 1) * lf->h.page_size,
                           lf->h.page_size) != 0)
        die("decoded page differs from the database", NULL);
    }
  }

  printf("\n%s: %zu file%s, %zu pages, %.1f MB page data, %.1f MB LTX (%.2fx), best of %u\n\n",
         ds->name, ds->n_files, ds->n_files == 1 ? "" : "s", ds->n_pages,
         (double)ds->page_bytes / 1e6, (double)ds->file_bytes / 1e6,
         (double)ds->page_bytes / (double)ds->file_bytes, runs);
  /* Runs interleave the paths (round r times every path once) so that a
  ** noisy moment on a shared machine hits all of them alike; best of runs. */
  double best[N_ROWS];
  for (size_t r = 0; r < N_ROWS; r++) {
    if (row_wanted(r)) k_rows[r].fn(&c); /* warm caches, fault in buffers */
    best[r] = 1e30;
  }
  for (unsigned run = 0; run < runs; run++)
    for (size_t r = 0; r < N_ROWS; r++) {
      if (!row_wanted(r)) continue;
      double t = time_run(&c, k_rows[r].fn);
      if (t < best[r]) best[r] = t;
    }
  printf("| %-38s | %14s | %16s |\n", "path", "MB/s page data", "ratio to raw LZ4");
  printf("|%.40s|%.16s|%.18s|\n", "----------------------------------------",
         "----------------", "------------------");
  for (size_t r = 0; r < N_ROWS; r++) {
    mbs[r] = (double)ds->page_bytes / best[r] / 1e6;
    if (!row_wanted(r)) continue;
    printf("| %-38s | %14.0f | %16.2f |\n", k_rows[r].name, mbs[r], mbs[r] / mbs[0]);
  }
  LZ4F_freeDecompressionContext(c.dctx);
  free(c.page);
  free(c.all_pages);
  return mbs[ROW_VERIFY] / mbs[0];
}

/* ---- 4. fixture files ---- */

static dataset *g_fixtures;

static int add_fixture(const char *path, const struct stat *st, int type, struct FTW *ftw) {
  size_t len = strlen(path);
  (void)ftw;
  if (type != FTW_F || len < 4 || strcmp(path + len - 4, ".ltx") != 0) return 0;
  FILE *fp = fopen(path, "rb");
  uint8_t *buf = malloc(st->st_size ? (size_t)st->st_size : 1);
  if (!fp || !buf || fread(buf, 1, (size_t)st->st_size, fp) != (size_t)st->st_size) {
    fprintf(stderr, "bench_ltx: cannot read %s\n", path);
    exit(1);
  }
  fclose(fp);
  dataset_add(g_fixtures, buf, (size_t)st->st_size);
  return 0;
}

int main(int argc, char **argv) {
  unsigned size_mb = 64, runs = 10, page_size = 4096;
  const char *fixtures = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--size-mb") && i + 1 < argc) size_mb = (unsigned)atoi(argv[++i]);
    else if (!strcmp(argv[i], "--runs") && i + 1 < argc) runs = (unsigned)atoi(argv[++i]);
    else if (!strcmp(argv[i], "--page-size") && i + 1 < argc) page_size = (unsigned)atoi(argv[++i]);
    else if (!strcmp(argv[i], "--fixtures") && i + 1 < argc) fixtures = argv[++i];
    else if (!strcmp(argv[i], "--only") && i + 1 < argc) g_only = argv[++i];
    else {
      fprintf(stderr,
              "usage: %s [--size-mb N] [--runs N] [--page-size N] [--fixtures DIR]"
              " [--only TEXT]\n",
              argv[0]);
      return 2;
    }
  }
  if (size_mb < 1 || runs < 1 || page_size < LTX_MIN_PAGE_SIZE ||
      page_size > LTX_MAX_PAGE_SIZE || (page_size & (page_size - 1))) {
    fprintf(stderr, "bench_ltx: bad option value\n");
    return 2;
  }

  const char *best = NULL;
  for (int i = 0; ltx_crc64_impl_name(i); i++) best = ltx_crc64_impl_name(i);
  printf("bench_ltx: LZ4 %s, SQLite %s, crc64 implementation: %s\n", LZ4_versionString(),
         sqlite3_libversion(), best);

  /* The generated database. */
  sqlite3_int64 img_size;
  double t0 = now_sec();
  unsigned char *img = build_sqlite_db(size_mb, page_size, &img_size);
  ltx_membuf ltx = {0};
  double t1 = now_sec();
  encode_snapshot(img, (size_t)img_size, page_size, &ltx);
  double t2 = now_sec();
  printf("built a %.1f MB SQLite database in %.1f s, encoded it as LTX in %.2f s (%.0f MB/s)\n",
         (double)img_size / 1e6, t1 - t0, t2 - t1, (double)img_size / 1e6 / (t2 - t1));
  dataset app = {.name = "SQLite app database (users, messages, 2 indexes)"};
  dataset_add(&app, ltx.buf, ltx.len);
  double ratio = run_dataset(&app, runs, img);
  sqlite3_free(img);
  dataset_free(&app);

  /* The fixtures. */
  static const char *const k_fixture_dirs[] = {"tests/fixtures", "../shared/fixtures/main"};
  struct stat st;
  for (size_t i = 0; !fixtures && i < sizeof k_fixture_dirs / sizeof k_fixture_dirs[0]; i++)
    if (stat(k_fixture_dirs[i], &st) == 0 && S_ISDIR(st.st_mode)) fixtures = k_fixture_dirs[i];
  double fratio = -1;
  if (fixtures && (stat(fixtures, &st) != 0 || !S_ISDIR(st.st_mode))) {
    printf("\nfixtures: %s is not a directory, skipped\n", fixtures);
    fixtures = NULL;
  }
  if (fixtures) {
    dataset fx = {.name = fixtures};
    g_fixtures = &fx;
    if (nftw(fixtures, add_fixture, 16, FTW_PHYS) != 0) die("walking the fixtures", NULL);
    if (fx.n_files) fratio = run_dataset(&fx, runs, NULL);
    dataset_free(&fx);
  }

  printf("\n%s: ltx_verify_buffer at %.2fx raw LZ4 on the app database (target >= %.2f)",
         ratio >= TARGET_RATIO ? "PASS" : "FAIL", ratio, TARGET_RATIO);
  if (fratio >= 0) printf("; fixtures %.2fx", fratio);
  printf("\n");
  return 0;
}
