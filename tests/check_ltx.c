/*
** check_ltx.c: the Check suite of the LTX codec (ltx/).
**
** What it proves, tcase by tcase:
**
**   crc64       (tests/check_ltx_crc.c) every CRC implementation against a
**               bitwise reference, and the vectors of docs/ltx-format.md: check value, a
**               page checksum, the database checksum of 262155 pages
**   header      field round trip and every header rule with its own code
**   fixtures    every file Litestream wrote (tests/fixtures) verifies and
**               matches manifest.tsv; stream, buffer and random access agree
**   roundtrip   encoder -> decoder for page sizes 512..65536, snapshots and
**               incremental files, checksummed mode with database checksums
**   legacy      hand-assembled files with LZ4F (v0.5.0-0.5.15) frames
**   malformed   each defect gives its specific code and names where
**   index       tail parsing, *need, lookups
**   compact     merging, shrinks, checksums, contiguity, and the images of
**               Litestream's own restore (expected.tsv) from compacted fixtures
**   big         a 64 KiB-page snapshot across the lock page (1 GiB of pages)
**
** Files with one defect are built by the raw_* helpers below, which write
** any frame bytes the test wants and a correct checksum and index for them,
** so the defect under test is the only one and the code returned is the one
** for it.
*/
#include "config.h"

#include <check.h>
#include <limits.h>
#include <lz4.h>
#include <lz4frame.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ltx/ltx.h"
#include "testutil.h"

/* tests/check_ltx_crc.c: the CRC implementations against a reference. */
TCase *ltx_crc_tcase(void);

#define FLAG LTX_CHECKSUM_FLAG
#define NOCK LTX_HEADER_FLAG_NO_CHECKSUM

/* ------------------------------------------------------------------ */
/* I/O adapters                                                        */
/* ------------------------------------------------------------------ */

static int mem_write(void *ctx, const uint8_t *buf, size_t n, ltx_error *err) {
  if (tu_buf_append(ctx, buf, n) != 0) return ltx_error_set(err, LTX_ERR_NOMEM, "test buffer");
  return LTX_OK;
}

/* A reader over memory handing out at most `chunk` bytes per call (0: as
** many as asked), failing with LTX_ERR_IO once pos reaches fail_at (0: never). */
typedef struct mem_reader {
  const uint8_t *p;
  size_t n, pos, chunk, fail_at;
} mem_reader;

static int mem_read(void *ctx, uint8_t *buf, size_t n, size_t *nread, ltx_error *err) {
  mem_reader *r = ctx;
  size_t k = r->n - r->pos;
  if (r->fail_at != 0 && r->pos >= r->fail_at)
    return ltx_error_set(err, LTX_ERR_IO, "injected read error at %zu", r->pos);
  if (k > n) k = n;
  if (r->chunk != 0 && k > r->chunk) k = r->chunk;
  memcpy(buf, r->p + r->pos, k);
  r->pos += k;
  *nread = k;
  return LTX_OK;
}

static int mem_read_at(void *ctx, uint64_t off, uint8_t *buf, size_t n, ltx_error *err) {
  const tu_buf *b = ctx;
  if (off > b->n || n > b->n - off)
    return ltx_error_set(err, LTX_ERR_IO, "read of %zu at %llu past %zu", n,
                         (unsigned long long)off, b->n);
  memcpy(buf, b->p + off, n);
  return LTX_OK;
}

static ltx_source mem_source(tu_buf *b) {
  ltx_source s = {mem_read_at, b, b->n};
  return s;
}

/* ------------------------------------------------------------------ */
/* A model database image                                              */
/* ------------------------------------------------------------------ */

typedef struct image {
  uint32_t ps, npages;
  uint8_t *p;
} image;

static uint8_t *img_page(image *im, uint32_t pgno) { return im->p + (size_t)(pgno - 1) * im->ps; }

/* Truncates or extends (with zero pages) to npages. */
static void img_resize(image *im, uint32_t npages) {
  uint8_t *grown = realloc(im->p, (size_t)(npages ? npages : 1) * im->ps);
  ck_assert_ptr_nonnull(grown);
  im->p = grown;
  if (npages > im->npages) memset(img_page(im, im->npages + 1), 0, (size_t)(npages - im->npages) * im->ps);
  im->npages = npages;
}

static void img_free(image *im) {
  free(im->p);
  memset(im, 0, sizeof(*im));
}

static void img_copy(image *dst, const image *src) {
  dst->ps = src->ps;
  dst->npages = 0;
  dst->p = NULL;
  img_resize(dst, src->npages);
  if (src->npages > 0) memcpy(dst->p, src->p, (size_t)src->npages * src->ps);
}

static void assert_img_equal(const image *a, const image *b) {
  ck_assert_uint_eq(a->ps, b->ps);
  ck_assert_uint_eq(a->npages, b->npages);
  for (uint32_t i = 0; i < a->npages; i++)
    ck_assert_msg(memcmp(a->p + (size_t)i * a->ps, b->p + (size_t)i * b->ps, a->ps) == 0,
                  "page %u differs", i + 1);
}

/* Database checksum of the image (docs/ltx-format.md, "Checksums"). */
static uint64_t img_db_checksum(image *im) {
  uint64_t db = FLAG;
  for (uint32_t pg = 1; pg <= im->npages; pg++)
    if (pg != ltx_lock_pgno(im->ps)) db = ltx_db_checksum_fold(db, ltx_page_checksum(pg, img_page(im, pg), im->ps));
  return db;
}

/* Deterministic page content: random head, compressible tail. */
static void make_page(uint8_t *page, uint32_t ps, uint32_t pgno, uint32_t version) {
  uint64_t seed = ((uint64_t)pgno << 32) ^ version ^ 0x5eed;
  size_t head = ps / 4;
  tu_fill_random(&seed, page, head);
  for (size_t i = head; i < ps; i++) page[i] = (uint8_t)("ltvfs"[i % 5] + version);
}

/* Decoded content of one file. */
typedef struct decoded {
  ltx_header h;
  ltx_trailer t;
  ltx_index idx;
  uint32_t *pgnos;
  uint8_t *pages;
  size_t n;
} decoded;

static void decoded_free(decoded *d) {
  ltx_index_free(&d->idx);
  free(d->pgnos);
  free(d->pages);
  memset(d, 0, sizeof(*d));
}

/* Runs the streaming decoder over buf with a reader of `chunk` bytes per call;
** returns the first error (or LTX_OK) and what was decoded so far. */
static int decode_stream(const uint8_t *buf, size_t n, size_t chunk, decoded *out,
                         ltx_error *err) {
  mem_reader r = {buf, n, 0, chunk, 0};
  ltx_decoder *d = NULL;
  uint8_t *page = NULL;
  size_t cap = 0;
  int rc;

  memset(out, 0, sizeof(*out));
  rc = ltx_decoder_open(&d, mem_read, &r, err);
  if (rc != LTX_OK) goto out;
  out->h = *ltx_decoder_header(d);
  page = malloc(out->h.page_size);
  ck_assert_ptr_nonnull(page);
  for (;;) {
    uint32_t pgno;
    rc = ltx_decoder_next(d, &pgno, page, err);
    if (rc != LTX_OK) break;
    if (out->n == cap) {
      cap = cap ? cap * 2 : 16;
      out->pgnos = realloc(out->pgnos, cap * sizeof(uint32_t));
      out->pages = realloc(out->pages, cap * out->h.page_size);
      ck_assert(out->pgnos != NULL && out->pages != NULL);
    }
    out->pgnos[out->n] = pgno;
    memcpy(out->pages + out->n * out->h.page_size, page, out->h.page_size);
    out->n++;
  }
  if (rc != LTX_DONE) goto out;
  rc = ltx_decoder_finish(d, &out->t, &out->idx, err);
  if (rc == LTX_OK) ck_assert_uint_eq(ltx_decoder_offset(d), n);
out:
  free(page);
  ltx_decoder_free(d);
  return rc;
}

/* Applies a file to an image (docs/restore-plan.md: write its pages, then
** truncate or extend to its commit). */
static void img_apply(image *im, const uint8_t *file, size_t n) {
  decoded dec;
  ltx_error err;
  int rc = decode_stream(file, n, 0, &dec, &err);
  ck_assert_msg(rc == LTX_OK, "apply: %s: %s", ltx_err_name(rc), err.msg);
  if (im->ps == 0) im->ps = dec.h.page_size;
  ck_assert_uint_eq(im->ps, dec.h.page_size);
  img_resize(im, dec.h.commit);
  for (size_t i = 0; i < dec.n; i++)
    memcpy(img_page(im, dec.pgnos[i]), dec.pages + i * dec.h.page_size, dec.h.page_size);
  decoded_free(&dec);
}

static void assert_header_eq(const ltx_header *a, const ltx_header *b) {
  ck_assert_uint_eq(a->flags, b->flags);
  ck_assert_uint_eq(a->page_size, b->page_size);
  ck_assert_uint_eq(a->commit, b->commit);
  ck_assert_uint_eq(a->min_txid, b->min_txid);
  ck_assert_uint_eq(a->max_txid, b->max_txid);
  ck_assert_int_eq(a->timestamp_ms, b->timestamp_ms);
  ck_assert_uint_eq(a->pre_apply_checksum, b->pre_apply_checksum);
  ck_assert_uint_eq(a->wal_offset, b->wal_offset);
  ck_assert_uint_eq(a->wal_size, b->wal_size);
  ck_assert_uint_eq(a->wal_salt1, b->wal_salt1);
  ck_assert_uint_eq(a->wal_salt2, b->wal_salt2);
  ck_assert_uint_eq(a->node_id, b->node_id);
}

static ltx_header mkhdr(uint32_t ps, uint32_t commit, uint64_t min_txid, uint64_t max_txid) {
  ltx_header h;
  memset(&h, 0, sizeof(h));
  h.flags = NOCK;
  h.page_size = ps;
  h.commit = commit;
  h.min_txid = min_txid;
  h.max_txid = max_txid;
  h.timestamp_ms = 1795342761103 + (int64_t)max_txid;
  return h;
}

/* Encodes the listed pages of the image under header h. */
static void encode_pages(tu_buf *out, const ltx_header *h, image *im, const uint32_t *pgnos,
                         size_t n, uint64_t post) {
  ltx_encoder *e = NULL;
  ltx_error err;
  int rc;
  memset(out, 0, sizeof(*out));
  rc = ltx_encoder_open(&e, h, mem_write, out, &err);
  ck_assert_msg(rc == LTX_OK, "%s", err.msg);
  for (size_t i = 0; i < n; i++) {
    rc = ltx_encoder_put(e, pgnos[i], img_page(im, pgnos[i]), &err);
    ck_assert_msg(rc == LTX_OK, "put %u: %s", pgnos[i], err.msg);
  }
  rc = ltx_encoder_close(e, post, &err);
  ck_assert_msg(rc == LTX_OK, "close: %s", err.msg);
  ck_assert_uint_eq(ltx_encoder_size(e), out->n);
  ltx_encoder_free(e);
}

/* Encodes every page of the image (except the lock page) as a snapshot. */
static void encode_snapshot(tu_buf *out, image *im, uint64_t max_txid, uint32_t flags) {
  ltx_header h = mkhdr(im->ps, im->npages, 1, max_txid);
  uint32_t *pg = malloc((im->npages + 1) * sizeof(uint32_t));
  size_t n = 0;
  ck_assert_ptr_nonnull(pg);
  h.flags = flags;
  for (uint32_t p = 1; p <= im->npages; p++)
    if (p != ltx_lock_pgno(im->ps)) pg[n++] = p;
  encode_pages(out, &h, im, pg, n, (flags & NOCK) ? 0 : img_db_checksum(im));
  free(pg);
}

/* ------------------------------------------------------------------ */
/* Raw file builder: arbitrary frames, correct index and checksum       */
/* ------------------------------------------------------------------ */

typedef struct raw {
  tu_buf b;
  uint64_t crc;
  ltx_page_entry e[256];
  size_t n;
  uint32_t ps;
} raw;

static void raw_put(raw *r, const void *p, size_t n, int hash) {
  ck_assert_int_eq(tu_buf_append(&r->b, p, n), 0);
  if (hash) r->crc = ltx_crc64(r->crc, p, n);
}

static void raw_begin(raw *r, const ltx_header *h) {
  uint8_t buf[LTX_HEADER_SIZE];
  memset(r, 0, sizeof(*r));
  ltx_header_encode(h, buf);
  r->ps = h->page_size;
  raw_put(r, buf, sizeof(buf), 1);
}

static void be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}
static void be64(uint8_t *p, uint64_t v) {
  be32(p, (uint32_t)(v >> 32));
  be32(p + 4, (uint32_t)v);
}
static uint64_t get_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

static void raw_record(raw *r, uint32_t pgno, size_t off) {
  ck_assert_uint_lt(r->n, 256);
  r->e[r->n].pgno = pgno;
  r->e[r->n].offset = off;
  r->e[r->n].size = (uint32_t)(r->b.n - off);
  r->n++;
}

/* A current-format frame with any flags and block; crc_page is what enters
** the checksum as "the decompressed page". */
static void raw_current(raw *r, uint32_t pgno, uint16_t flags, const void *block, uint32_t csize,
                        const uint8_t *crc_page) {
  uint8_t hdr[10];
  size_t off = r->b.n;
  be32(hdr, pgno);
  hdr[4] = (uint8_t)(flags >> 8);
  hdr[5] = (uint8_t)flags;
  be32(hdr + 6, csize);
  raw_put(r, hdr, 10, 1);
  raw_put(r, block, csize, 0);
  r->crc = ltx_crc64(r->crc, crc_page, r->ps);
  raw_record(r, pgno, off);
}

/* Compresses content (len bytes: a page, or a wrong length on purpose). */
static void raw_current_page(raw *r, uint32_t pgno, const uint8_t *content, size_t len) {
  int bound = LZ4_compressBound((int)len);
  char *block = malloc((size_t)bound);
  int csize;
  ck_assert_ptr_nonnull(block);
  csize = LZ4_compress_default((const char *)content, block, (int)len, bound);
  ck_assert_int_gt(csize, 0);
  raw_current(r, pgno, LTX_PAGE_FLAG_SIZE, block, (uint32_t)csize, content);
  free(block);
}

/* One LZ4F frame as Litestream v0.5.0-0.5.15 wrote it: 64 KiB blocks,
** content checksum. */
static uint8_t *lz4f_frame(const uint8_t *src, size_t len, size_t *out_len) {
  LZ4F_preferences_t prefs;
  size_t bound, n;
  uint8_t *buf;
  memset(&prefs, 0, sizeof(prefs));
  prefs.frameInfo.blockSizeID = LZ4F_max64KB;
  prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
  bound = LZ4F_compressFrameBound(len, &prefs);
  buf = malloc(bound);
  ck_assert_ptr_nonnull(buf);
  n = LZ4F_compressFrame(buf, bound, src, len, &prefs);
  ck_assert_msg(!LZ4F_isError(n), "LZ4F_compressFrame: %s", LZ4F_getErrorName(n));
  *out_len = n;
  return buf;
}

/* A legacy frame (flags 0) holding content (len bytes); the checksum takes
** the 6-byte header and the page, no csize (docs/ltx-format.md, "Checksums"). */
static void raw_legacy(raw *r, uint32_t pgno, const uint8_t *content, size_t len) {
  uint8_t hdr[6] = {0};
  size_t flen, off = r->b.n;
  uint8_t *f = lz4f_frame(content, len, &flen);
  be32(hdr, pgno);
  raw_put(r, hdr, 6, 1);
  raw_put(r, f, flen, 0);
  r->crc = ltx_crc64(r->crc, content, r->ps);
  raw_record(r, pgno, off);
  free(f);
}

/* Terminator, index of the recorded frames, isz, trailer. */
static void raw_finish(raw *r, uint64_t post) {
  uint8_t buf[32];
  size_t isz = 1;
  memset(buf, 0, sizeof(buf));
  raw_put(r, buf, LTX_TERMINATOR_SIZE, 1);
  for (size_t i = 0; i < r->n; i++) {
    size_t k = ltx_uvarint_put(buf, r->e[i].pgno);
    k += ltx_uvarint_put(buf + k, r->e[i].offset);
    k += ltx_uvarint_put(buf + k, r->e[i].size);
    raw_put(r, buf, k, 1);
    isz += k;
  }
  buf[0] = 0;
  raw_put(r, buf, 1, 1);
  be64(buf, isz);
  raw_put(r, buf, 8, 1);
  be64(buf, post);
  raw_put(r, buf, 8, 1);
  be64(buf, FLAG | r->crc);
  raw_put(r, buf, 8, 0);
}

/* Both decoders must give `want`, with want_in_msg (if any) in the message. */
static void expect_code(const tu_buf *b, int want, const char *want_in_msg) {
  ltx_error err;
  decoded dec;
  int rc = ltx_verify_buffer(b->p, b->n, NULL, NULL, &err);
  ck_assert_msg(rc == want, "verify_buffer: %s, want %s (%s)", ltx_err_name(rc), ltx_err_name(want),
                rc ? err.msg : "");
  if (want != LTX_OK) ck_assert_int_eq(err.code, want);
  if (want_in_msg != NULL)
    ck_assert_msg(strstr(err.msg, want_in_msg) != NULL, "message \"%s\" lacks \"%s\"", err.msg,
                  want_in_msg);
  rc = decode_stream(b->p, b->n, 3, &dec, &err);
  ck_assert_msg(rc == want, "stream: %s, want %s (%s)", ltx_err_name(rc), ltx_err_name(want),
                rc ? err.msg : "");
  if (want_in_msg != NULL)
    ck_assert_msg(strstr(err.msg, want_in_msg) != NULL, "stream message \"%s\" lacks \"%s\"",
                  err.msg, want_in_msg);
  decoded_free(&dec);
}

/* ------------------------------------------------------------------ */
/* crc                                                                 */
/* ------------------------------------------------------------------ */

/* ------------------------------------------------------------------ */
/* header                                                              */
/* ------------------------------------------------------------------ */

START_TEST(test_header_round_trips_every_field) {
  ltx_header h = mkhdr(4096, 265, 7, 9), g;
  uint8_t buf[LTX_HEADER_SIZE];
  ltx_error err;
  h.flags = 0;
  h.pre_apply_checksum = FLAG | 0x1234;
  h.timestamp_ms = -5;
  h.wal_offset = 32;
  h.wal_size = 4128;
  h.wal_salt1 = 0xdeadbeef;
  h.wal_salt2 = 0x01020304;
  h.node_id = 0x0102030405060708ull;
  memset(buf, 0xAA, sizeof(buf));
  ltx_header_encode(&h, buf);
  ck_assert_mem_eq(buf, "LTX1", 4);
  for (int i = 80; i < LTX_HEADER_SIZE; i++) ck_assert_uint_eq(buf[i], 0);
  ck_assert_int_eq(ltx_header_decode(buf, &g, &err), LTX_OK);
  assert_header_eq(&g, &h);
  /* Reserved bytes are ignored on read. */
  buf[90] = 1;
  ck_assert_int_eq(ltx_header_decode(buf, &g, &err), LTX_OK);
}
END_TEST

static int decode_modified(const ltx_header *h, int patch_magic, ltx_error *err) {
  uint8_t buf[LTX_HEADER_SIZE];
  ltx_header g;
  ltx_header_encode(h, buf);
  if (patch_magic) buf[3] = '2';
  return ltx_header_decode(buf, &g, err);
}

START_TEST(test_header_bad_magic_is_LTX_ERR_MAGIC) {
  ltx_header h = mkhdr(4096, 1, 1, 1);
  ltx_error err;
  ck_assert_int_eq(decode_modified(&h, 1, &err), LTX_ERR_MAGIC);
  ck_assert_ptr_nonnull(strstr(err.msg, "offset 0"));
}
END_TEST

START_TEST(test_header_unknown_flag_is_LTX_ERR_FLAGS) {
  const uint32_t bad[] = {0x1, 0x4, 0x3, 0x80000000u};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ltx_header h = mkhdr(4096, 1, 1, 1);
    ltx_error err;
    h.flags = bad[i];
    ck_assert_int_eq(decode_modified(&h, 0, &err), LTX_ERR_FLAGS);
    ck_assert_int_eq(ltx_header_validate(&h, &err), LTX_ERR_FLAGS);
  }
}
END_TEST

START_TEST(test_header_page_size_must_be_power_of_two_512_to_65536) {
  const uint32_t bad[] = {0, 1, 256, 511, 1000, 1536, 131072, 0xFFFFFFFFu};
  ltx_error err;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ltx_header h = mkhdr(bad[i], 1, 1, 1);
    ck_assert_int_eq(decode_modified(&h, 0, &err), LTX_ERR_PAGE_SIZE);
  }
  for (uint32_t ps = 512; ps <= 65536; ps *= 2) {
    ltx_header h = mkhdr(ps, 1, 1, 1);
    ck_assert_int_eq(decode_modified(&h, 0, &err), LTX_OK);
  }
}
END_TEST

START_TEST(test_header_txid_rules_are_LTX_ERR_TXID) {
  ltx_error err;
  ltx_header h = mkhdr(4096, 1, 0, 5);
  ck_assert_int_eq(decode_modified(&h, 0, &err), LTX_ERR_TXID);
  h = mkhdr(4096, 1, 6, 5);
  ck_assert_int_eq(decode_modified(&h, 0, &err), LTX_ERR_TXID);
  h = mkhdr(4096, 1, 5, 5);
  ck_assert_int_eq(decode_modified(&h, 0, &err), LTX_OK);
}
END_TEST

START_TEST(test_header_pre_apply_checksum_form_is_LTX_ERR_HEADER) {
  ltx_error err;
  ltx_header h;
  /* Snapshot: 0 in both modes. */
  h = mkhdr(4096, 1, 1, 1);
  h.pre_apply_checksum = FLAG | 1;
  ck_assert_int_eq(ltx_header_validate(&h, &err), LTX_ERR_HEADER);
  h.flags = 0;
  ck_assert_int_eq(ltx_header_validate(&h, &err), LTX_ERR_HEADER);
  h.pre_apply_checksum = 0;
  ck_assert_int_eq(ltx_header_validate(&h, &err), LTX_OK);
  /* NoChecksum incremental: 0. */
  h = mkhdr(4096, 1, 2, 2);
  h.pre_apply_checksum = 5;
  ck_assert_int_eq(ltx_header_validate(&h, &err), LTX_ERR_HEADER);
  /* Checksummed incremental: bit 63 set (so never 0). */
  h.flags = 0;
  ck_assert_int_eq(ltx_header_validate(&h, &err), LTX_ERR_HEADER);
  h.pre_apply_checksum = 0;
  ck_assert_int_eq(ltx_header_validate(&h, &err), LTX_ERR_HEADER);
  h.pre_apply_checksum = FLAG | 5;
  ck_assert_int_eq(ltx_header_validate(&h, &err), LTX_OK);
  ck_assert_int_eq(decode_modified(&h, 0, &err), LTX_OK);
}
END_TEST

START_TEST(test_file_name_round_trips_and_rejects_other_names) {
  char buf[64];
  uint64_t lo, hi;
  ck_assert_str_eq(ltx_file_name(1, 0xabc, buf), "0000000000000001-0000000000000abc.ltx");
  ck_assert_int_eq(ltx_file_name_parse(buf, &lo, &hi), 0);
  ck_assert_uint_eq(lo, 1);
  ck_assert_uint_eq(hi, 0xabc);
  ck_assert_int_eq(ltx_file_name_parse("0000000000000001-0000000000000ABC.ltx", &lo, &hi), -1);
  ck_assert_int_eq(ltx_file_name_parse("0000000000000001-0000000000000abc.ltx.tmp", &lo, &hi), -1);
  ck_assert_int_eq(ltx_file_name_parse("000000000000001-0000000000000abc.ltx", &lo, &hi), -1);
  ck_assert_int_eq(ltx_file_name_parse("0000000000000001_0000000000000abc.ltx", &lo, &hi), -1);
  ck_assert_int_eq(ltx_file_name_parse("", &lo, &hi), -1);
}
END_TEST

START_TEST(test_err_name_names_known_codes_and_numbers_others) {
  ck_assert_str_eq(ltx_err_name(LTX_OK), "LTX_OK");
  ck_assert_str_eq(ltx_err_name(LTX_ERR_MAGIC), "LTX_ERR_MAGIC");
  ck_assert_str_eq(ltx_err_name(LTX_ERR_CONTIGUITY), "LTX_ERR_CONTIGUITY");
  ck_assert_str_eq(ltx_err_name(105), "error 105");
  ck_assert_str_eq(ltx_err_name(-1), "error -1");
}
END_TEST

START_TEST(test_error_prefix_prepends_and_stays_terminated) {
  ltx_error err;
  char big[600];
  ck_assert_int_eq(ltx_error_set(&err, LTX_ERR_INDEX, "entry %d", 3), LTX_ERR_INDEX);
  ltx_error_prefix(&err, "file %s", "a.ltx");
  ck_assert_str_eq(err.msg, "file a.ltx: entry 3");
  ck_assert_int_eq(err.code, LTX_ERR_INDEX);
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = 0;
  ltx_error_prefix(&err, "%s", big);
  ck_assert_uint_eq(strlen(err.msg), sizeof(err.msg) - 1);
  ltx_error_clear(&err);
  ck_assert_int_eq(err.code, LTX_OK);
  ck_assert_str_eq(err.msg, "");
  /* A NULL error is allowed everywhere. */
  ck_assert_int_eq(ltx_error_set(NULL, LTX_ERR_IO, "x"), LTX_ERR_IO);
  ltx_error_prefix(NULL, "y");
  ltx_error_clear(NULL);
}
END_TEST

/* ------------------------------------------------------------------ */
/* fixtures                                                            */
/* ------------------------------------------------------------------ */

/* Splits a line into tab-separated fields in place; returns the count. */
static int split_tabs(char *line, char **f, int max) {
  int n = 0;
  f[n++] = line;
  for (char *p = line; *p && n < max; p++)
    if (*p == '\t') {
      *p = '\0';
      f[n++] = p + 1;
    }
  return n;
}

START_TEST(test_fixtures_verify_and_match_manifest) {
  char path[PATH_MAX];
  size_t n_manifest, checked = 0;
  char *manifest = (char *)tu_read_file(tu_fixture_path(path, sizeof(path), "manifest.tsv"), &n_manifest);
  char *save = NULL, *line;
  ck_assert_msg(manifest != NULL, "cannot read %s", path);
  line = strtok_r(manifest, "\n", &save); /* column names */
  ck_assert_ptr_nonnull(strstr(line, "file_checksum"));
  while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
    char *f[16];
    char rel[PATH_MAX];
    size_t n;
    uint8_t *buf;
    ltx_header h;
    ltx_trailer t;
    ltx_error err;
    int rc, nf = split_tabs(line, f, 16);
    ck_assert_int_ge(nf, 14);
    if (strcmp(f[4], "0") == 0) continue; /* a step that made no file */
    snprintf(rel, sizeof(rel), "%s/%s", f[0], f[3]);
    buf = tu_read_file(tu_fixture_path(path, sizeof(path), rel), &n);
    ck_assert_msg(buf != NULL, "cannot read %s", path);
    ck_assert_uint_eq(n, strtoull(f[4], NULL, 10));
    rc = ltx_verify_buffer(buf, n, &h, &t, &err);
    ck_assert_msg(rc == LTX_OK, "%s: %s: %s", rel, ltx_err_name(rc), err.msg);
    ck_assert_uint_eq(h.flags, strtoul(f[5], NULL, 16));
    ck_assert_uint_eq(h.page_size, strtoul(f[6], NULL, 10));
    ck_assert_uint_eq(h.commit, strtoul(f[7], NULL, 10));
    ck_assert_uint_eq(h.min_txid, strtoull(f[8], NULL, 16));
    ck_assert_uint_eq(h.max_txid, strtoull(f[9], NULL, 16));
    ck_assert_int_eq(h.timestamp_ms, strtoll(f[10], NULL, 10));
    ck_assert_uint_eq(h.pre_apply_checksum, strtoull(f[11], NULL, 16));
    ck_assert_uint_eq(t.post_apply_checksum, strtoull(f[12], NULL, 16));
    ck_assert_uint_eq(t.file_checksum, strtoull(f[13], NULL, 16));
    free(buf);
    checked++;
  }
  ck_assert_uint_eq(checked, 23);
  free(manifest);
}
END_TEST

/* nftw has no context argument: the walk collects into these. */
static char fixture_files[64][PATH_MAX];
static size_t n_fixture_files;

static int collect_ltx(const char *path, const struct stat *st, int type, struct FTW *ftw) {
  size_t len = strlen(path);
  (void)st;
  (void)ftw;
  if (type == FTW_F && len > 4 && strcmp(path + len - 4, ".ltx") == 0 && n_fixture_files < 64)
    snprintf(fixture_files[n_fixture_files++], PATH_MAX, "%s", path);
  return 0;
}

static void collect_fixture_files(void) {
  n_fixture_files = 0;
  ck_assert_int_eq(nftw(TU_FIXTURES_DIR, collect_ltx, 16, FTW_PHYS), 0);
}

START_TEST(test_every_fixture_file_verifies_in_all_three_decoders) {
  collect_fixture_files();
  /* 23 in manifest.tsv plus the two files of shrink/, which it omits. */
  ck_assert_uint_eq(n_fixture_files, 25);
  for (size_t i = 0; i < n_fixture_files; i++) {
    size_t n, need;
    uint8_t *buf = tu_read_file(fixture_files[i], &n);
    decoded dec;
    ltx_index idx;
    ltx_error err;
    uint8_t *page;
    size_t tail;
    int rc;
    ck_assert_ptr_nonnull(buf);
    rc = ltx_verify_buffer(buf, n, NULL, NULL, &err);
    ck_assert_msg(rc == LTX_OK, "%s: %s", fixture_files[i], err.msg);
    rc = decode_stream(buf, n, 4096, &dec, &err);
    ck_assert_msg(rc == LTX_OK, "%s: stream: %s", fixture_files[i], err.msg);
    /* Random access: the index from the tail (as a suffix read would give
    ** it) equals the index the stream saw, and every frame gives the page
    ** the stream gave. */
    tail = n < LTX_INDEX_TAIL_GUESS ? n : LTX_INDEX_TAIL_GUESS;
    rc = ltx_index_parse_tail(buf + n - tail, tail, n, &idx, &need, &err);
    if (rc == LTX_ERR_TRUNCATED) {
      ck_assert_uint_gt(need, tail);
      rc = ltx_index_parse_tail(buf + n - need, need, n, &idx, &need, &err);
    }
    ck_assert_msg(rc == LTX_OK, "%s: index: %s", fixture_files[i], err.msg);
    ck_assert_uint_eq(idx.n, dec.n);
    ck_assert_uint_eq(dec.idx.n, dec.n);
    ck_assert_mem_eq(idx.entries, dec.idx.entries, idx.n * sizeof(ltx_page_entry));
    page = malloc(dec.h.page_size);
    for (size_t k = 0; k < idx.n; k++) {
      const ltx_page_entry *e = ltx_index_find(&idx, dec.pgnos[k]);
      ck_assert_ptr_eq(e, &idx.entries[k]);
      ck_assert_uint_eq(buf[e->offset + 5], LTX_PAGE_FLAG_SIZE); /* all current format */
      rc = ltx_frame_decode(buf + e->offset, e->size, e->pgno, dec.h.page_size, page, &err);
      ck_assert_msg(rc == LTX_OK, "%s: page %u: %s", fixture_files[i], e->pgno, err.msg);
      ck_assert(memcmp(page, dec.pages + k * dec.h.page_size, dec.h.page_size) == 0);
    }
    free(page);
    ltx_index_free(&idx);
    decoded_free(&dec);
    free(buf);
  }
}
END_TEST

START_TEST(test_byte_at_a_time_reader_decodes_fixture) {
  const char *rel[] = {"main/ltx/0/0000000000000009-0000000000000009.ltx",
                       "shrink/ltx/0/0000000000000002-0000000000000002.ltx"};
  for (size_t i = 0; i < 2; i++) {
    char path[PATH_MAX];
    size_t n;
    uint8_t *buf = tu_read_file(tu_fixture_path(path, sizeof(path), rel[i]), &n);
    decoded one, big;
    ltx_error err;
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(decode_stream(buf, n, 1, &one, &err), LTX_OK);
    ck_assert_int_eq(decode_stream(buf, n, 0, &big, &err), LTX_OK);
    ck_assert_uint_eq(one.n, big.n);
    ck_assert_uint_gt(one.n, 0);
    ck_assert(memcmp(one.pgnos, big.pgnos, one.n * sizeof(uint32_t)) == 0);
    ck_assert(memcmp(one.pages, big.pages, one.n * one.h.page_size) == 0);
    ck_assert_uint_eq(one.t.file_checksum, big.t.file_checksum);
    decoded_free(&one);
    decoded_free(&big);
    free(buf);
  }
}
END_TEST

START_TEST(test_shrink_fixture_holds_only_the_changed_pages) {
  char path[PATH_MAX];
  size_t n;
  uint8_t *buf = tu_read_file(
      tu_fixture_path(path, sizeof(path), "shrink/ltx/0/0000000000000002-0000000000000002.ltx"), &n);
  decoded dec;
  ltx_error err;
  const uint32_t want[] = {1, 2, 3, 79, 80};
  ck_assert_ptr_nonnull(buf);
  ck_assert_int_eq(decode_stream(buf, n, 0, &dec, &err), LTX_OK);
  ck_assert_uint_eq(dec.h.commit, 80);
  ck_assert_uint_eq(dec.n, 5);
  ck_assert(memcmp(dec.pgnos, want, sizeof(want)) == 0);
  decoded_free(&dec);
  free(buf);
}
END_TEST

START_TEST(test_decoder_without_checksum_verification_skips_file_checksum) {
  char path[PATH_MAX];
  size_t n;
  uint8_t *buf = tu_read_file(
      tu_fixture_path(path, sizeof(path), "main/ltx/0/0000000000000009-0000000000000009.ltx"), &n);
  mem_reader r;
  ltx_decoder *d = NULL;
  ltx_error err;
  uint8_t page[4096];
  uint32_t pgno;
  int rc;
  ck_assert_ptr_nonnull(buf);
  buf[n - 1] ^= 1;
  ck_assert_int_eq(ltx_verify_buffer(buf, n, NULL, NULL, &err), LTX_ERR_FILE_CHECKSUM);
  r = (mem_reader){buf, n, 0, 0, 0};
  ck_assert_int_eq(ltx_decoder_open(&d, mem_read, &r, &err), LTX_OK);
  ltx_decoder_set_verify_checksum(d, 0);
  while ((rc = ltx_decoder_next(d, &pgno, page, &err)) == LTX_OK) continue;
  ck_assert_int_eq(rc, LTX_DONE);
  ck_assert_int_eq(ltx_decoder_finish(d, NULL, NULL, &err), LTX_OK);
  ltx_decoder_free(d);
  free(buf);
}
END_TEST

/* ------------------------------------------------------------------ */
/* roundtrip                                                           */
/* ------------------------------------------------------------------ */

/* Every way of reading f must give the pages of `want` listed in pgnos. */
static void assert_file_holds(const tu_buf *f, image *want, const uint32_t *pgnos, size_t n) {
  ltx_error err;
  decoded dec;
  ltx_index idx;
  size_t need;
  uint8_t *page = malloc(want->ps);
  int rc = ltx_verify_buffer(f->p, f->n, NULL, NULL, &err);
  ck_assert_msg(rc == LTX_OK, "verify: %s", err.msg);
  rc = decode_stream(f->p, f->n, 7, &dec, &err);
  ck_assert_msg(rc == LTX_OK, "stream: %s", err.msg);
  ck_assert_uint_eq(dec.n, n);
  for (size_t i = 0; i < n; i++) {
    ck_assert_uint_eq(dec.pgnos[i], pgnos[i]);
    ck_assert(memcmp(dec.pages + i * want->ps, img_page(want, pgnos[i]), want->ps) == 0);
  }
  rc = ltx_index_parse_tail(f->p, f->n, f->n, &idx, &need, &err);
  ck_assert_msg(rc == LTX_OK, "index: %s", err.msg);
  ck_assert_uint_eq(idx.n, n);
  for (size_t i = 0; i < n; i++) {
    const ltx_page_entry *e = ltx_index_find(&idx, pgnos[i]);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(ltx_frame_decode(f->p + e->offset, e->size, pgnos[i], want->ps, page, &err),
                     LTX_OK);
    ck_assert(memcmp(page, img_page(want, pgnos[i]), want->ps) == 0);
  }
  ltx_index_free(&idx);
  decoded_free(&dec);
  free(page);
}

START_TEST(test_encoder_decoder_round_trip_every_page_size) {
  for (uint32_t ps = 512; ps <= 65536; ps *= 2) {
    uint32_t commit = ps >= 32768 ? 5 : 24, all[64], some[64];
    size_t n_all = 0, n_some = 0;
    uint64_t seed = ps;
    image model = {ps, 0, NULL}, replay = {0, 0, NULL};
    tu_buf f;
    ltx_header h;

    img_resize(&model, commit);
    for (uint32_t p = 1; p <= commit; p++) {
      make_page(img_page(&model, p), ps, p, 1);
      all[n_all++] = p;
    }
    /* Page 2 is incompressible, page 3 all zeros: both extremes of LZ4. */
    tu_fill_random(&seed, img_page(&model, 2), ps);
    memset(img_page(&model, 3), 0, ps);
    encode_snapshot(&f, &model, 1, NOCK);
    assert_file_holds(&f, &model, all, n_all);
    img_apply(&replay, f.p, f.n);
    assert_img_equal(&replay, &model);
    tu_buf_free(&f);

    /* Incremental: change a few pages and grow by two. */
    img_resize(&model, commit + 2);
    for (uint32_t p = 1; p <= commit + 2; p++) {
      if (p % 3 == 1 || p > commit) {
        make_page(img_page(&model, p), ps, p, 2);
        some[n_some++] = p;
      }
    }
    h = mkhdr(ps, commit + 2, 2, 3);
    encode_pages(&f, &h, &model, some, n_some, 0);
    assert_file_holds(&f, &model, some, n_some);
    img_apply(&replay, f.p, f.n);
    assert_img_equal(&replay, &model);
    tu_buf_free(&f);

    /* A shrink to 3 pages that rewrites page 1 only. */
    img_resize(&model, 3);
    make_page(img_page(&model, 1), ps, 1, 3);
    h = mkhdr(ps, 3, 4, 4);
    encode_pages(&f, &h, &model, all, 1, 0);
    img_apply(&replay, f.p, f.n);
    assert_img_equal(&replay, &model);
    tu_buf_free(&f);
    img_free(&model);
    img_free(&replay);
  }
}
END_TEST

START_TEST(test_encoder_writes_litestream_layout) {
  image model = {4096, 0, NULL};
  const uint32_t pg[] = {1, 2, 3};
  tu_buf f;
  ltx_header h = mkhdr(4096, 3, 1, 1), g;
  ltx_error err;
  size_t off = LTX_HEADER_SIZE;
  img_resize(&model, 3);
  for (uint32_t p = 1; p <= 3; p++) make_page(img_page(&model, p), 4096, p, 1);
  encode_pages(&f, &h, &model, pg, 3, 0);
  ck_assert_int_eq(ltx_header_decode(f.p, &g, &err), LTX_OK);
  ck_assert_uint_eq(g.flags, NOCK);
  ck_assert_uint_eq(g.pre_apply_checksum, 0);
  for (uint32_t p = 1; p <= 3; p++) {
    uint32_t csize = (uint32_t)f.p[off + 6] << 24 | (uint32_t)f.p[off + 7] << 16 |
                     (uint32_t)f.p[off + 8] << 8 | f.p[off + 9];
    ck_assert_uint_eq(f.p[off + 3], p);
    ck_assert_uint_eq(f.p[off + 4], 0);
    ck_assert_uint_eq(f.p[off + 5], 1); /* current frame */
    ck_assert_int_le(csize, LZ4_compressBound(4096));
    off += 10 + csize;
  }
  for (int i = 0; i < 6; i++) ck_assert_uint_eq(f.p[off + (size_t)i], 0);
  ck_assert_uint_eq(get_be64(f.p + f.n - 16), 0);            /* post-apply */
  ck_assert_uint_eq(get_be64(f.p + f.n - 8) & FLAG, FLAG);   /* file checksum */
  tu_buf_free(&f);
  img_free(&model);
}
END_TEST

START_TEST(test_checksummed_mode_round_trip_with_db_checksums) {
  image model = {1024, 0, NULL};
  uint32_t pg[] = {2, 5, 11};
  tu_buf snap, inc, bad;
  ltx_header h = mkhdr(1024, 10, 1, 1);
  ltx_trailer t;
  ltx_error err;
  ltx_encoder *e = NULL;
  uint64_t pre, post;

  img_resize(&model, 10);
  for (uint32_t p = 1; p <= 10; p++) make_page(img_page(&model, p), 1024, p, 1);
  encode_snapshot(&snap, &model, 1, 0);
  ck_assert_int_eq(ltx_verify_buffer(snap.p, snap.n, NULL, &t, &err), LTX_OK);
  pre = img_db_checksum(&model);
  ck_assert_uint_eq(t.post_apply_checksum, pre);

  /* Incremental: pre is the snapshot's post; post is updated by XOR-ing the
  ** old page checksums out and the new ones in (docs/ltx-format.md). */
  post = pre;
  img_resize(&model, 11);
  for (size_t i = 0; i < 3; i++) {
    if (pg[i] <= 10) post = ltx_db_checksum_fold(post, ltx_page_checksum(pg[i], img_page(&model, pg[i]), 1024));
    make_page(img_page(&model, pg[i]), 1024, pg[i], 2);
    post = ltx_db_checksum_fold(post, ltx_page_checksum(pg[i], img_page(&model, pg[i]), 1024));
  }
  ck_assert_uint_eq(post, img_db_checksum(&model));
  h = mkhdr(1024, 11, 2, 2);
  h.flags = 0;
  h.pre_apply_checksum = pre;
  encode_pages(&inc, &h, &model, pg, 3, post);
  ck_assert_int_eq(ltx_verify_buffer(inc.p, inc.n, NULL, &t, &err), LTX_OK);
  ck_assert_uint_eq(t.post_apply_checksum, post);

  /* The encoder refuses a snapshot whose post-apply checksum is wrong ... */
  h = mkhdr(1024, 1, 1, 1);
  h.flags = 0;
  memset(&bad, 0, sizeof(bad));
  ck_assert_int_eq(ltx_encoder_open(&e, &h, mem_write, &bad, &err), LTX_OK);
  ck_assert_int_eq(ltx_encoder_put(e, 1, img_page(&model, 1), &err), LTX_OK);
  ck_assert_int_eq(ltx_encoder_close(e, FLAG | 42, &err), LTX_ERR_DB_CHECKSUM);
  ck_assert_int_eq(ltx_encoder_close(e, 42, &err), LTX_ERR_ARG); /* flag missing */
  ltx_encoder_free(e);
  tu_buf_free(&bad);
  /* ... and the decoder rejects one built by hand. */
  {
    raw r;
    h = mkhdr(1024, 1, 1, 1);
    h.flags = 0;
    raw_begin(&r, &h);
    raw_current_page(&r, 1, img_page(&model, 1), 1024);
    raw_finish(&r, FLAG | 42);
    expect_code(&r.b, LTX_ERR_DB_CHECKSUM, "post-apply");
    tu_buf_free(&r.b);
    /* Post-apply in a NoChecksum file must be 0. */
    h.flags = NOCK;
    raw_begin(&r, &h);
    raw_current_page(&r, 1, img_page(&model, 1), 1024);
    raw_finish(&r, FLAG | 42);
    expect_code(&r.b, LTX_ERR_DB_CHECKSUM, "NoChecksum");
    tu_buf_free(&r.b);
  }
  tu_buf_free(&snap);
  tu_buf_free(&inc);
  img_free(&model);
}
END_TEST

START_TEST(test_encoder_rejects_misuse_without_writing) {
  uint8_t page[512];
  tu_buf out;
  ltx_encoder *e = NULL;
  ltx_error err;
  ltx_header h = mkhdr(512, 10, 2, 2);
  size_t before;
  memset(page, 7, sizeof(page));
  memset(&out, 0, sizeof(out));
  ck_assert_int_eq(ltx_encoder_open(&e, &h, mem_write, &out, &err), LTX_OK);
  ck_assert_int_eq(ltx_encoder_put(e, 0, page, &err), LTX_ERR_ARG);
  ck_assert_int_eq(ltx_encoder_put(e, 11, page, &err), LTX_ERR_ARG);
  ck_assert_int_eq(ltx_encoder_put(e, 5, page, &err), LTX_OK);
  before = out.n;
  ck_assert_int_eq(ltx_encoder_put(e, 5, page, &err), LTX_ERR_ARG);
  ck_assert_int_eq(ltx_encoder_put(e, 4, page, &err), LTX_ERR_ARG);
  ck_assert_uint_eq(out.n, before);
  ck_assert_int_eq(ltx_encoder_close(e, 7, &err), LTX_ERR_ARG); /* NoChecksum: post 0 */
  ck_assert_int_eq(ltx_encoder_close(e, 0, &err), LTX_OK);
  ck_assert_int_eq(ltx_encoder_put(e, 6, page, &err), LTX_ERR_ARG);
  ltx_encoder_free(e);
  ck_assert_int_eq(ltx_verify_buffer(out.p, out.n, NULL, NULL, &err), LTX_OK);
  tu_buf_free(&out);

  /* The lock page is never stored. */
  {
    static uint8_t big[65536];
    h = mkhdr(65536, 16390, 2, 2);
    memset(&out, 0, sizeof(out));
    ck_assert_int_eq(ltx_encoder_open(&e, &h, mem_write, &out, &err), LTX_OK);
    ck_assert_int_eq(ltx_encoder_put(e, 16384, big, &err), LTX_OK);
    ck_assert_int_eq(ltx_encoder_put(e, 16385, big, &err), LTX_ERR_ARG);
    ck_assert_ptr_nonnull(strstr(err.msg, "lock page"));
    ck_assert_int_eq(ltx_encoder_put(e, 16386, big, &err), LTX_OK);
    ck_assert_int_eq(ltx_encoder_close(e, 0, &err), LTX_OK);
    ltx_encoder_free(e);
    ck_assert_int_eq(ltx_verify_buffer(out.p, out.n, NULL, NULL, &err), LTX_OK);
    tu_buf_free(&out);
  }

  /* Snapshots: gapless from page 1, complete at close. */
  h = mkhdr(512, 3, 1, 1);
  memset(&out, 0, sizeof(out));
  ck_assert_int_eq(ltx_encoder_open(&e, &h, mem_write, &out, &err), LTX_OK);
  ck_assert_int_eq(ltx_encoder_put(e, 2, page, &err), LTX_ERR_SNAPSHOT);
  ck_assert_int_eq(ltx_encoder_put(e, 1, page, &err), LTX_OK);
  ck_assert_int_eq(ltx_encoder_put(e, 3, page, &err), LTX_ERR_SNAPSHOT);
  ck_assert_int_eq(ltx_encoder_put(e, 2, page, &err), LTX_OK);
  ck_assert_int_eq(ltx_encoder_close(e, 0, &err), LTX_ERR_SNAPSHOT);
  ck_assert_int_eq(ltx_encoder_put(e, 3, page, &err), LTX_OK);
  ck_assert_int_eq(ltx_encoder_close(e, 0, &err), LTX_OK);
  ltx_encoder_free(e);
  tu_buf_free(&out);

  /* Header rules, and Litestream's WAL-field rules. */
  h = mkhdr(1000, 3, 1, 1);
  ck_assert_int_eq(ltx_encoder_open(&e, &h, mem_write, &out, &err), LTX_ERR_PAGE_SIZE);
  ck_assert_ptr_null(e);
  h = mkhdr(512, 3, 2, 2);
  h.wal_size = 4096;
  ck_assert_int_eq(ltx_encoder_open(&e, &h, mem_write, &out, &err), LTX_ERR_HEADER);
  h.wal_size = 0;
  h.wal_salt1 = 9;
  ck_assert_int_eq(ltx_encoder_open(&e, &h, mem_write, &out, &err), LTX_ERR_HEADER);
  h.wal_offset = 1ull << 63;
  ck_assert_int_eq(ltx_encoder_open(&e, &h, mem_write, &out, &err), LTX_ERR_HEADER);
  h.wal_offset = 32;
  ck_assert_int_eq(ltx_encoder_open(&e, &h, mem_write, &out, &err), LTX_OK);
  ltx_encoder_free(e);
  tu_buf_free(&out);
}
END_TEST

static int failing_write(void *ctx, const uint8_t *buf, size_t n, ltx_error *err) {
  size_t *budget = ctx;
  (void)buf;
  if (n > *budget) return ltx_error_set(err, LTX_ERR_IO, "disk full");
  *budget -= n;
  return LTX_OK;
}

START_TEST(test_encoder_write_failure_is_sticky) {
  uint8_t page[512] = {0};
  size_t budget = LTX_HEADER_SIZE; /* the header fits, nothing else */
  ltx_encoder *e = NULL;
  ltx_error err;
  ltx_header h = mkhdr(512, 3, 2, 2);
  ck_assert_int_eq(ltx_encoder_open(&e, &h, failing_write, &budget, &err), LTX_OK);
  ck_assert_int_eq(ltx_encoder_put(e, 1, page, &err), LTX_ERR_IO);
  ck_assert_ptr_nonnull(strstr(err.msg, "disk full"));
  ck_assert_int_eq(ltx_encoder_put(e, 2, page, &err), LTX_ERR_IO);
  ck_assert_int_eq(ltx_encoder_close(e, 0, &err), LTX_ERR_IO);
  ltx_encoder_free(e);
}
END_TEST

/* ------------------------------------------------------------------ */
/* legacy                                                              */
/* ------------------------------------------------------------------ */

START_TEST(test_legacy_frames_decode_streaming_and_random_access) {
  const uint32_t sizes[] = {512, 4096, 65536};
  for (size_t s = 0; s < 3; s++) {
    uint32_t ps = sizes[s];
    image model = {ps, 0, NULL};
    ltx_header h = mkhdr(ps, 4, 1, 1);
    const uint32_t pg[] = {1, 2, 3, 4};
    uint64_t seed = 99;
    raw r;
    img_resize(&model, 4);
    for (uint32_t p = 1; p <= 4; p++) make_page(img_page(&model, p), ps, p, 1);
    tu_fill_random(&seed, img_page(&model, 3), ps); /* stored as an uncompressed LZ4F block */
    raw_begin(&r, &h);
    raw_legacy(&r, 1, img_page(&model, 1), ps);
    raw_current_page(&r, 2, img_page(&model, 2), ps); /* both kinds in one file */
    raw_legacy(&r, 3, img_page(&model, 3), ps);
    raw_legacy(&r, 4, img_page(&model, 4), ps);
    raw_finish(&r, 0);
    assert_file_holds(&r.b, &model, pg, 4);
    /* Tiny reads split the LZ4F frames anywhere. */
    for (size_t chunk = 1; chunk <= 5; chunk += 4) {
      decoded dec;
      ltx_error err;
      ck_assert_int_eq(decode_stream(r.b.p, r.b.n, chunk, &dec, &err), LTX_OK);
      ck_assert_uint_eq(dec.n, 4);
      ck_assert(memcmp(dec.pages, model.p, 4 * (size_t)ps) == 0);
      decoded_free(&dec);
    }
    tu_buf_free(&r.b);
    img_free(&model);
  }
}
END_TEST

START_TEST(test_legacy_frame_not_one_page_is_LTX_ERR_DECOMPRESS) {
  uint8_t content[2048];
  ltx_header h = mkhdr(1024, 4, 2, 2);
  raw r;
  memset(content, 'q', sizeof(content));
  raw_begin(&r, &h);
  raw_legacy(&r, 2, content, 512); /* half a page */
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_ERR_DECOMPRESS, "page 2");
  tu_buf_free(&r.b);
  raw_begin(&r, &h);
  raw_legacy(&r, 2, content, 2048); /* two pages */
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_ERR_DECOMPRESS, "page 2");
  tu_buf_free(&r.b);
}
END_TEST

START_TEST(test_legacy_frame_corrupt_content_checksum_is_LTX_ERR_DECOMPRESS) {
  uint8_t content[1024];
  ltx_header h = mkhdr(1024, 4, 2, 2);
  raw r;
  for (size_t i = 0; i < sizeof(content); i++) content[i] = (uint8_t)(i * 7);
  raw_begin(&r, &h);
  raw_legacy(&r, 3, content, sizeof(content));
  raw_finish(&r, 0);
  /* The LZ4F content checksum sits just before the terminator. */
  r.b.p[r.e[0].offset + r.e[0].size - 1] ^= 0xff;
  expect_code(&r.b, LTX_ERR_DECOMPRESS, "page 3");
  tu_buf_free(&r.b);
}
END_TEST

START_TEST(test_frame_decode_checks_page_and_length) {
  uint8_t content[1024], page[2048];
  ltx_header h = mkhdr(1024, 4, 2, 2);
  ltx_error err;
  raw r;
  memset(content, 'z', sizeof(content));
  raw_begin(&r, &h);
  raw_legacy(&r, 2, content, sizeof(content));
  raw_current_page(&r, 3, content, sizeof(content));
  raw_finish(&r, 0);
  for (size_t i = 0; i < 2; i++) {
    const ltx_page_entry *e = &r.e[i];
    const uint8_t *f = r.b.p + e->offset;
    ck_assert_int_eq(ltx_frame_decode(f, e->size, e->pgno, 1024, page, &err), LTX_OK);
    ck_assert_int_eq(ltx_frame_decode(f, e->size, 0, 1024, page, &err), LTX_OK);
    ck_assert_int_eq(ltx_frame_decode(f, e->size, e->pgno + 1, 1024, page, &err), LTX_ERR_INDEX);
    ck_assert_int_eq(ltx_frame_decode(f, e->size - 1, e->pgno, 1024, page, &err), LTX_ERR_TRUNCATED);
    ck_assert_int_eq(ltx_frame_decode(f, e->size + 6, e->pgno, 1024, page, &err), LTX_ERR_FRAME);
    ck_assert_int_eq(ltx_frame_decode(f, 5, e->pgno, 1024, page, &err), LTX_ERR_TRUNCATED);
    ck_assert_int_eq(ltx_frame_decode(f, e->size, e->pgno, 2048, page, &err), LTX_ERR_DECOMPRESS);
  }
  tu_buf_free(&r.b);
}
END_TEST

/* ------------------------------------------------------------------ */
/* malformed                                                           */
/* ------------------------------------------------------------------ */

/* A valid two-page incremental file to damage. */
static void good_file(raw *r, uint32_t ps, uint32_t commit) {
  uint8_t *page = malloc(ps);
  ltx_header h = mkhdr(ps, commit, 2, 2);
  raw_begin(r, &h);
  make_page(page, ps, 1, 1);
  raw_current_page(r, 1, page, ps);
  make_page(page, ps, 2, 1);
  raw_current_page(r, 2, page, ps);
  raw_finish(r, 0);
  free(page);
}

START_TEST(test_bad_magic_flags_page_size_are_specific_codes) {
  raw r;
  good_file(&r, 512, 4);
  expect_code(&r.b, LTX_OK, NULL);
  r.b.p[0] = 'X';
  expect_code(&r.b, LTX_ERR_MAGIC, "offset 0");
  r.b.p[0] = 'L';
  r.b.p[7] = 0x3;
  expect_code(&r.b, LTX_ERR_FLAGS, "0x00000003");
  r.b.p[7] = 0x2;
  r.b.p[10] = 0x03; /* 512 -> 0x300 + 0 = 768 */
  expect_code(&r.b, LTX_ERR_PAGE_SIZE, "768");
  tu_buf_free(&r.b);
}
END_TEST

START_TEST(test_pages_out_of_order_are_LTX_ERR_PAGE_ORDER) {
  uint8_t page[512];
  raw r;
  ltx_header h = mkhdr(512, 10, 2, 2);
  memset(page, 1, sizeof(page));
  /* descending */
  raw_begin(&r, &h);
  raw_current_page(&r, 3, page, 512);
  raw_current_page(&r, 2, page, 512);
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_ERR_PAGE_ORDER, "page 2 at offset");
  tu_buf_free(&r.b);
  /* duplicate */
  raw_begin(&r, &h);
  raw_current_page(&r, 3, page, 512);
  raw_current_page(&r, 3, page, 512);
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_ERR_PAGE_ORDER, "page 3");
  tu_buf_free(&r.b);
  /* page 0 with the size flag: not the terminator */
  raw_begin(&r, &h);
  raw_current_page(&r, 0, page, 512);
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_ERR_PAGE_ORDER, "offset 100");
  tu_buf_free(&r.b);
  /* above commit */
  raw_begin(&r, &h);
  raw_current_page(&r, 11, page, 512);
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_ERR_PAGE_ORDER, "above commit 10");
  tu_buf_free(&r.b);
  /* the lock page */
  {
    static uint8_t big[65536];
    ltx_header hb = mkhdr(65536, 16390, 2, 2);
    raw_begin(&r, &hb);
    raw_current_page(&r, 16385, big, sizeof(big));
    raw_finish(&r, 0);
    expect_code(&r.b, LTX_ERR_PAGE_ORDER, "lock page");
    tu_buf_free(&r.b);
  }
}
END_TEST

START_TEST(test_snapshot_missing_page_is_LTX_ERR_SNAPSHOT) {
  uint8_t page[512];
  raw r;
  ltx_header h = mkhdr(512, 3, 1, 1);
  memset(page, 1, sizeof(page));
  raw_begin(&r, &h);
  raw_current_page(&r, 1, page, 512);
  raw_current_page(&r, 3, page, 512);
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_ERR_SNAPSHOT, "lacks page 2");
  tu_buf_free(&r.b);
  raw_begin(&r, &h);
  raw_current_page(&r, 1, page, 512);
  raw_current_page(&r, 2, page, 512);
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_ERR_SNAPSHOT, "commit 3");
  tu_buf_free(&r.b);
}
END_TEST

START_TEST(test_bad_page_flags_and_csize_are_LTX_ERR_FRAME) {
  uint8_t page[512], block[600];
  const uint16_t bad_flags[] = {0x0002, 0x8001, 0x0003};
  raw r;
  ltx_header h = mkhdr(512, 4, 2, 2);
  int csize;
  memset(page, 1, sizeof(page));
  csize = LZ4_compress_default((const char *)page, (char *)block, 512, sizeof(block));
  for (size_t i = 0; i < 3; i++) {
    raw_begin(&r, &h);
    raw_current(&r, 2, bad_flags[i], block, (uint32_t)csize, page);
    raw_finish(&r, 0);
    expect_code(&r.b, LTX_ERR_FRAME, "page flags");
    tu_buf_free(&r.b);
  }
  /* csize 0, and one above LZ4_compressBound(512) = 530 */
  memset(block, 0, sizeof(block));
  raw_begin(&r, &h);
  raw_current(&r, 2, 1, block, 0, page);
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_ERR_FRAME, "csize 0");
  tu_buf_free(&r.b);
  raw_begin(&r, &h);
  raw_current(&r, 2, 1, block, 531, page);
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_ERR_FRAME, "csize 531");
  tu_buf_free(&r.b);
}
END_TEST

START_TEST(test_frame_running_past_end_is_LTX_ERR_TRUNCATED) {
  raw r;
  good_file(&r, 512, 4);
  /* Page 2's csize claims the largest plausible block, past the end. */
  {
    size_t off = r.e[1].offset;
    be32(r.b.p + off + 6, 530);
    ck_assert_uint_lt(r.b.n, off + 10 + 530);
  }
  expect_code(&r.b, LTX_ERR_TRUNCATED, "page 2 at offset");
  tu_buf_free(&r.b);
}
END_TEST

START_TEST(test_decompression_not_one_page_is_LTX_ERR_DECOMPRESS) {
  uint8_t content[1024], junk[64];
  raw r;
  ltx_header h = mkhdr(512, 4, 2, 2);
  memset(content, 'a', sizeof(content));
  raw_begin(&r, &h);
  raw_current_page(&r, 2, content, 256); /* short */
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_ERR_DECOMPRESS, "256 bytes");
  tu_buf_free(&r.b);
  raw_begin(&r, &h);
  raw_current_page(&r, 2, content, 1024); /* long */
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_ERR_DECOMPRESS, "page 2");
  tu_buf_free(&r.b);
  memset(junk, 0xff, sizeof(junk)); /* not LZ4 at all */
  raw_begin(&r, &h);
  raw_current(&r, 2, 1, junk, sizeof(junk), content);
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_ERR_DECOMPRESS, "page 2");
  tu_buf_free(&r.b);
}
END_TEST

START_TEST(test_index_disagreeing_with_frames_is_LTX_ERR_INDEX) {
  raw r;
  ltx_error err;
  ltx_index idx;
  size_t need, idx_at;
  good_file(&r, 512, 4);
  /* The index starts right after the terminator; its first entry is
  ** "1, 100, size": change the page number. */
  idx_at = r.e[1].offset + r.e[1].size + LTX_TERMINATOR_SIZE;
  ck_assert_uint_eq(r.b.p[idx_at], 1);
  r.b.p[idx_at] = 3;
  expect_code(&r.b, LTX_ERR_INDEX, "index entry 0");
  /* Random access finds it too (page 3 after page ... then 2: not ascending). */
  ck_assert_int_eq(ltx_index_parse_tail(r.b.p, r.b.n, r.b.n, &idx, &need, &err), LTX_ERR_INDEX);
  r.b.p[idx_at] = 1;
  /* The offset of entry 0 points outside the file. */
  r.b.p[idx_at + 1] = 0xff;
  r.b.p[idx_at + 2] = 0x7f; /* offset 16383 in two bytes instead of 100 in one: sizes shift */
  expect_code(&r.b, LTX_ERR_INDEX, NULL);
  ck_assert_int_eq(ltx_index_parse_tail(r.b.p, r.b.n, r.b.n, &idx, &need, &err), LTX_ERR_INDEX);
  tu_buf_free(&r.b);
}
END_TEST

START_TEST(test_index_pointing_outside_file_is_LTX_ERR_INDEX) {
  raw r;
  ltx_header h = mkhdr(512, 4, 2, 2);
  uint8_t page[512];
  ltx_error err;
  ltx_index idx;
  size_t need;
  memset(page, 5, sizeof(page));
  raw_begin(&r, &h);
  raw_current_page(&r, 2, page, 512);
  r.e[0].offset = 1u << 20; /* the index will say 1 MiB */
  raw_finish(&r, 0);
  ck_assert_int_eq(ltx_index_parse_tail(r.b.p, r.b.n, r.b.n, &idx, &need, &err), LTX_ERR_INDEX);
  ck_assert_ptr_nonnull(strstr(err.msg, "offset 1048576"));
  expect_code(&r.b, LTX_ERR_INDEX, "offset 1048576");
  tu_buf_free(&r.b);
  /* An index size larger than the file. */
  good_file(&r, 512, 4);
  be64(r.b.p + r.b.n - 24, 1ull << 40);
  ck_assert_int_eq(ltx_index_parse_tail(r.b.p, r.b.n, r.b.n, &idx, &need, &err), LTX_ERR_INDEX);
  ck_assert_ptr_nonnull(strstr(err.msg, "does not fit"));
  expect_code(&r.b, LTX_ERR_INDEX, "index size");
  tu_buf_free(&r.b);
}
END_TEST

START_TEST(test_wrong_file_checksum_is_LTX_ERR_FILE_CHECKSUM) {
  raw r;
  good_file(&r, 512, 4);
  r.b.p[r.b.n - 1] ^= 1; /* the stored checksum */
  expect_code(&r.b, LTX_ERR_FILE_CHECKSUM, "file checksum");
  r.b.p[r.b.n - 1] ^= 1;
  r.b.p[95] = 1; /* a reserved header byte: ignored, but covered */
  expect_code(&r.b, LTX_ERR_FILE_CHECKSUM, NULL);
  r.b.p[95] = 0;
  r.b.p[33] ^= 0x10; /* the timestamp */
  expect_code(&r.b, LTX_ERR_FILE_CHECKSUM, NULL);
  r.b.p[33] ^= 0x10; /* undone, the file is valid again */
  expect_code(&r.b, LTX_OK, NULL);
  tu_buf_free(&r.b);
}
END_TEST

START_TEST(test_bytes_after_trailer_are_LTX_ERR_TRAILING) {
  raw r;
  good_file(&r, 512, 4);
  ck_assert_int_eq(tu_buf_append(&r.b, "x", 1), 0);
  expect_code(&r.b, LTX_ERR_TRAILING, "after the trailer");
  tu_buf_free(&r.b);
}
END_TEST

START_TEST(test_every_truncation_is_LTX_ERR_TRUNCATED) {
  uint8_t page[512];
  raw r;
  ltx_header h = mkhdr(512, 4, 2, 2);
  ltx_error err;
  memset(page, 3, sizeof(page));
  raw_begin(&r, &h);
  raw_current_page(&r, 1, page, 512);
  raw_legacy(&r, 3, page, 512);
  raw_finish(&r, 0);
  expect_code(&r.b, LTX_OK, NULL);
  for (size_t len = 0; len < r.b.n; len++) {
    decoded dec;
    int rc = ltx_verify_buffer(r.b.p, len, NULL, NULL, &err);
    ck_assert_msg(rc == LTX_ERR_TRUNCATED, "length %zu: %s %s", len, ltx_err_name(rc), err.msg);
    rc = decode_stream(r.b.p, len, len % 7 + 1, &dec, &err);
    ck_assert_msg(rc == LTX_ERR_TRUNCATED, "stream length %zu: %s %s", len, ltx_err_name(rc), err.msg);
    decoded_free(&dec);
  }
  tu_buf_free(&r.b);
}
END_TEST

START_TEST(test_decoder_reports_read_errors_and_misuse) {
  raw r;
  mem_reader rd;
  ltx_decoder *d = NULL;
  ltx_error err;
  uint8_t page[512];
  uint32_t pgno;
  good_file(&r, 512, 4);
  rd = (mem_reader){r.b.p, r.b.n, 0, 1, 150};
  ck_assert_int_eq(ltx_decoder_open(&d, mem_read, &rd, &err), LTX_OK);
  ck_assert_int_eq(ltx_decoder_finish(d, NULL, NULL, &err), LTX_ERR_ARG);
  ck_assert_int_eq(ltx_decoder_next(d, &pgno, page, &err), LTX_ERR_IO);
  ck_assert_ptr_nonnull(strstr(err.msg, "injected"));
  /* Sticky: the decoder does not go on after a failure. */
  ck_assert_int_eq(ltx_decoder_next(d, &pgno, page, &err), LTX_ERR_IO);
  ltx_decoder_free(d);
  ck_assert_int_eq(ltx_decoder_open(&d, NULL, NULL, &err), LTX_ERR_ARG);
  tu_buf_free(&r.b);
}
END_TEST

/* ------------------------------------------------------------------ */
/* index                                                               */
/* ------------------------------------------------------------------ */

START_TEST(test_index_parse_short_tail_reports_need) {
  image model = {512, 0, NULL};
  uint32_t pg[200];
  tu_buf f;
  ltx_header h = mkhdr(512, 300, 2, 2);
  ltx_index idx;
  ltx_error err;
  size_t need = 0, isz;
  img_resize(&model, 300);
  for (uint32_t i = 0; i < 200; i++) {
    pg[i] = i + 50;
    make_page(img_page(&model, pg[i]), 512, pg[i], 1);
  }
  encode_pages(&f, &h, &model, pg, 200, 0);
  isz = (size_t)get_be64(f.p + f.n - 24);
  /* Too short for isz itself. */
  ck_assert_int_eq(ltx_index_parse_tail(f.p + f.n - 10, 10, f.n, &idx, &need, &err), LTX_ERR_TRUNCATED);
  ck_assert_uint_eq(need, 24);
  /* isz known, entries not. */
  ck_assert_int_eq(ltx_index_parse_tail(f.p + f.n - 100, 100, f.n, &idx, &need, &err), LTX_ERR_TRUNCATED);
  ck_assert_uint_eq(need, 24 + isz);
  ck_assert_ptr_null(idx.entries);
  ck_assert_int_eq(ltx_index_parse_tail(f.p + f.n - need, need, f.n, &idx, &need, &err), LTX_OK);
  ck_assert_uint_eq(idx.n, 200);
  for (uint32_t p = 1; p <= 300; p++) {
    const ltx_page_entry *e = ltx_index_find(&idx, p);
    if (p >= 50 && p < 250) {
      ck_assert_ptr_nonnull(e);
      ck_assert_uint_eq(e->pgno, p);
    } else {
      ck_assert_ptr_null(e);
    }
  }
  ltx_index_free(&idx);
  ck_assert_uint_eq(idx.n, 0);
  /* A file too small to be LTX: more bytes cannot help. */
  ck_assert_int_eq(ltx_index_parse_tail(f.p, 50, 50, &idx, &need, &err), LTX_ERR_TRUNCATED);
  ck_assert_uint_eq(need, 0);
  ck_assert_int_eq(ltx_index_parse_tail(f.p, 50, 40, &idx, &need, &err), LTX_ERR_ARG);
  tu_buf_free(&f);
  img_free(&model);
}
END_TEST

START_TEST(test_index_parse_rejects_malformed_varints) {
  raw r;
  ltx_index idx;
  ltx_error err;
  size_t need, idx_at;
  good_file(&r, 512, 4);
  idx_at = r.e[1].offset + r.e[1].size + LTX_TERMINATOR_SIZE;
  /* The end marker replaced: the entries run past the index. */
  r.b.p[r.b.n - 25] = 0x80;
  ck_assert_int_eq(ltx_index_parse_tail(r.b.p, r.b.n, r.b.n, &idx, &need, &err), LTX_ERR_INDEX);
  r.b.p[r.b.n - 25] = 0;
  /* Ten continuation bytes: overflow. */
  memset(r.b.p + idx_at, 0xff, 11);
  ck_assert_int_eq(ltx_index_parse_tail(r.b.p, r.b.n, r.b.n, &idx, &need, &err), LTX_ERR_INDEX);
  expect_code(&r.b, LTX_ERR_INDEX, NULL);
  tu_buf_free(&r.b);
}
END_TEST

/* ------------------------------------------------------------------ */
/* compact                                                             */
/* ------------------------------------------------------------------ */

static void compact_bufs(tu_buf *inputs, size_t n, tu_buf *out, ltx_header *oh, int want) {
  ltx_source src[16];
  ltx_error err;
  int rc;
  ck_assert_uint_le(n, 16);
  for (size_t i = 0; i < n; i++) src[i] = mem_source(&inputs[i]);
  memset(out, 0, sizeof(*out));
  rc = ltx_compact(src, n, mem_write, out, oh, &err);
  ck_assert_msg(rc == want, "compact: %s, want %s (%s)", ltx_err_name(rc), ltx_err_name(want),
                rc ? err.msg : "");
  if (rc == LTX_OK) {
    rc = ltx_verify_buffer(out->p, out->n, NULL, NULL, &err);
    ck_assert_msg(rc == LTX_OK, "compacted file: %s", err.msg);
  }
}

/* Restores a chain the way Litestream's restore does (fixture evidence:
** vacuum_then_write TXID 3 in expected.tsv): every file's pages are written
** in order, and only the last commit truncates. docs/restore-plan.md truncates
** after every file, which differs only when a file grows the database back
** over pages a shrink cut off without writing them. */
static void img_restore_chain(image *im, tu_buf *files, size_t n) {
  for (size_t i = 0; i < n; i++) {
    decoded dec;
    ltx_error err;
    int rc = decode_stream(files[i].p, files[i].n, 0, &dec, &err);
    ck_assert_msg(rc == LTX_OK, "restore: %s", err.msg);
    if (im->ps == 0) im->ps = dec.h.page_size;
    if (dec.h.commit > im->npages) img_resize(im, dec.h.commit);
    for (size_t k = 0; k < dec.n; k++)
      memcpy(img_page(im, dec.pgnos[k]), dec.pages + k * dec.h.page_size, dec.h.page_size);
    if (i + 1 == n) img_resize(im, dec.h.commit);
    decoded_free(&dec);
  }
}

/* Restores the inputs onto a copy of base and applies the compacted file to
** another copy: the images must be equal. */
static void assert_compaction_applies_like_inputs(const image *base, tu_buf *inputs, size_t n,
                                                  const tu_buf *out) {
  image seq, once;
  img_copy(&seq, base);
  img_copy(&once, base);
  img_restore_chain(&seq, inputs, n);
  img_apply(&once, out->p, out->n);
  assert_img_equal(&once, &seq);
  img_free(&seq);
  img_free(&once);
}

START_TEST(test_compact_three_files_with_shrink_newest_wins) {
  image model = {1024, 0, NULL}, empty = {1024, 0, NULL};
  tu_buf in[3], out;
  ltx_header h, oh;
  decoded dec;
  ltx_error err;
  const uint32_t b_pages[] = {3, 7, 21, 22, 23, 24, 25}, c_pages[] = {1, 7};

  img_resize(&model, 20);
  for (uint32_t p = 1; p <= 20; p++) make_page(img_page(&model, p), 1024, p, 1);
  encode_snapshot(&in[0], &model, 1, NOCK);
  img_resize(&model, 25);
  for (size_t i = 0; i < 7; i++) make_page(img_page(&model, b_pages[i]), 1024, b_pages[i], 2);
  h = mkhdr(1024, 25, 2, 2);
  encode_pages(&in[1], &h, &model, b_pages, 7, 0);
  img_resize(&model, 10);
  for (size_t i = 0; i < 2; i++) make_page(img_page(&model, c_pages[i]), 1024, c_pages[i], 3);
  h = mkhdr(1024, 10, 3, 3);
  encode_pages(&in[2], &h, &model, c_pages, 2, 0);

  compact_bufs(in, 3, &out, &oh, LTX_OK);
  ck_assert_uint_eq(oh.min_txid, 1);
  ck_assert_uint_eq(oh.max_txid, 3);
  ck_assert_uint_eq(oh.commit, 10);
  ck_assert_int_eq(oh.timestamp_ms, h.timestamp_ms);
  ck_assert_uint_eq(oh.flags, NOCK);
  ck_assert_uint_eq(oh.pre_apply_checksum, 0);
  /* A snapshot of exactly pages 1..10, each the newest version. */
  ck_assert_int_eq(decode_stream(out.p, out.n, 0, &dec, &err), LTX_OK);
  assert_header_eq(&dec.h, &oh);
  ck_assert_uint_eq(dec.n, 10);
  for (uint32_t p = 1; p <= 10; p++) {
    ck_assert_uint_eq(dec.pgnos[p - 1], p);
    ck_assert(memcmp(dec.pages + (p - 1) * 1024, img_page(&model, p), 1024) == 0);
  }
  decoded_free(&dec);
  assert_compaction_applies_like_inputs(&empty, in, 3, &out);
  tu_buf_free(&out);

  /* The incremental pair alone: pages above the final commit dropped. */
  compact_bufs(in + 1, 2, &out, &oh, LTX_OK);
  ck_assert_uint_eq(oh.min_txid, 2);
  ck_assert_int_eq(decode_stream(out.p, out.n, 0, &dec, &err), LTX_OK);
  ck_assert_uint_eq(dec.n, 3); /* 1, 3, 7 */
  ck_assert_uint_eq(dec.pgnos[2], 7);
  decoded_free(&dec);
  {
    image base;
    img_copy(&base, &empty);
    img_apply(&base, in[0].p, in[0].n);
    assert_compaction_applies_like_inputs(&base, in + 1, 2, &out);
    img_free(&base);
  }
  tu_buf_free(&out);
  for (int i = 0; i < 3; i++) tu_buf_free(&in[i]);
  img_free(&model);
}
END_TEST

START_TEST(test_compact_regrowth_after_shrink_keeps_older_pages_like_litestream) {
  image model = {512, 0, NULL}, base = {512, 0, NULL}, applied;
  tu_buf snap, in[3], out;
  ltx_header h;
  decoded dec;
  ltx_error err;
  const uint32_t b_pages[] = {3, 12, 25}, c_pages[] = {1}, d_pages[] = {12};
  const uint32_t want[] = {1, 3, 12};

  img_resize(&model, 20);
  for (uint32_t p = 1; p <= 20; p++) make_page(img_page(&model, p), 512, p, 1);
  encode_snapshot(&snap, &model, 1, NOCK);
  img_apply(&base, snap.p, snap.n);
  img_resize(&model, 25);
  for (size_t i = 0; i < 3; i++) make_page(img_page(&model, b_pages[i]), 512, b_pages[i], 2);
  h = mkhdr(512, 25, 2, 2);
  encode_pages(&in[0], &h, &model, b_pages, 3, 0);
  img_resize(&model, 10); /* shrink ... */
  make_page(img_page(&model, 1), 512, 1, 3);
  h = mkhdr(512, 10, 3, 3);
  encode_pages(&in[1], &h, &model, c_pages, 1, 0);
  img_resize(&model, 15); /* ... and grow back writing only page 12 */
  make_page(img_page(&model, 12), 512, 12, 4);
  h = mkhdr(512, 15, 4, 4);
  encode_pages(&in[2], &h, &model, d_pages, 1, 0);

  compact_bufs(in, 3, &out, NULL, LTX_OK);
  ck_assert_int_eq(decode_stream(out.p, out.n, 0, &dec, &err), LTX_OK);
  /* 1 (C), 3 (B), 12 (D); 25 is above the final commit. Pages 11, 13..15
  ** are not written: the database keeps what it had before, as after a
  ** Litestream restore. */
  ck_assert_uint_eq(dec.n, 3);
  ck_assert(memcmp(dec.pgnos, want, sizeof(want)) == 0);
  ck_assert(memcmp(dec.pages + 2 * 512, img_page(&model, 12), 512) == 0);
  decoded_free(&dec);
  assert_compaction_applies_like_inputs(&base, in, 3, &out);
  img_copy(&applied, &base);
  img_apply(&applied, out.p, out.n);
  ck_assert_uint_eq(applied.npages, 15);
  ck_assert(memcmp(img_page(&applied, 11), img_page(&base, 11), 512) == 0);
  ck_assert(memcmp(img_page(&applied, 14), img_page(&base, 14), 512) == 0);
  img_free(&applied);
  tu_buf_free(&out);
  tu_buf_free(&snap);
  for (int i = 0; i < 3; i++) tu_buf_free(&in[i]);
  img_free(&model);
  img_free(&base);
}
END_TEST

START_TEST(test_compact_checksummed_inputs_keep_checksums) {
  image model = {512, 0, NULL};
  tu_buf in[2], out, mixed[2];
  ltx_header h, oh;
  ltx_trailer t;
  ltx_error err;
  const uint32_t pg[] = {2, 9};
  uint64_t pre, post;

  img_resize(&model, 8);
  for (uint32_t p = 1; p <= 8; p++) make_page(img_page(&model, p), 512, p, 1);
  encode_snapshot(&in[0], &model, 1, 0);
  pre = img_db_checksum(&model);
  img_resize(&model, 9);
  make_page(img_page(&model, 2), 512, 2, 2);
  make_page(img_page(&model, 9), 512, 9, 2);
  post = img_db_checksum(&model);
  h = mkhdr(512, 9, 2, 2);
  h.flags = 0;
  h.pre_apply_checksum = pre;
  encode_pages(&in[1], &h, &model, pg, 2, post);
  compact_bufs(in, 2, &out, &oh, LTX_OK);
  ck_assert_uint_eq(oh.flags, 0);
  /* A checksummed snapshot: verification recomputes its post-apply. */
  ck_assert_int_eq(ltx_verify_buffer(out.p, out.n, NULL, &t, &err), LTX_OK);
  ck_assert_uint_eq(t.post_apply_checksum, post);
  tu_buf_free(&out);

  /* One NoChecksum input makes the output NoChecksum with zero checksums. */
  mixed[0] = in[0];
  h.flags = NOCK;
  h.pre_apply_checksum = 0;
  encode_pages(&mixed[1], &h, &model, pg, 2, 0);
  compact_bufs(mixed, 2, &out, &oh, LTX_OK);
  ck_assert_uint_eq(oh.flags, NOCK);
  ck_assert_int_eq(ltx_verify_buffer(out.p, out.n, NULL, &t, &err), LTX_OK);
  ck_assert_uint_eq(t.post_apply_checksum, 0);
  tu_buf_free(&out);
  tu_buf_free(&mixed[1]);
  for (int i = 0; i < 2; i++) tu_buf_free(&in[i]);
  img_free(&model);
}
END_TEST

START_TEST(test_compact_requires_contiguous_txids_and_one_page_size) {
  image model = {512, 0, NULL}, m2 = {1024, 0, NULL};
  tu_buf f[4], out;
  ltx_header h;
  const uint32_t pg[] = {1};
  img_resize(&model, 2);
  img_resize(&m2, 2);
  h = mkhdr(512, 2, 2, 3);
  encode_pages(&f[0], &h, &model, pg, 1, 0);
  h = mkhdr(512, 2, 5, 5); /* gap: 4 missing */
  encode_pages(&f[1], &h, &model, pg, 1, 0);
  h = mkhdr(512, 2, 3, 4); /* overlaps 3, advances to 4: allowed */
  encode_pages(&f[2], &h, &model, pg, 1, 0);
  h = mkhdr(1024, 2, 4, 4);
  encode_pages(&f[3], &h, &m2, pg, 1, 0);

  compact_bufs((tu_buf[]){f[0], f[1]}, 2, &out, NULL, LTX_ERR_CONTIGUITY);
  tu_buf_free(&out);
  compact_bufs((tu_buf[]){f[0], f[0]}, 2, &out, NULL, LTX_ERR_CONTIGUITY); /* does not advance */
  tu_buf_free(&out);
  compact_bufs((tu_buf[]){f[2], f[0]}, 2, &out, NULL, LTX_ERR_CONTIGUITY); /* goes back */
  tu_buf_free(&out);
  compact_bufs((tu_buf[]){f[0], f[2], f[1]}, 3, &out, NULL, LTX_OK);
  tu_buf_free(&out);
  compact_bufs((tu_buf[]){f[0], f[3]}, 2, &out, NULL, LTX_ERR_PAGE_SIZE);
  tu_buf_free(&out);
  compact_bufs(f, 0, &out, NULL, LTX_ERR_ARG);
  tu_buf_free(&out);
  for (int i = 0; i < 4; i++) tu_buf_free(&f[i]);
  img_free(&model);
  img_free(&m2);
}
END_TEST

START_TEST(test_compact_recompresses_legacy_and_reads_large_indexes) {
  image model = {512, 0, NULL}, empty = {512, 0, NULL};
  tu_buf in[2], out;
  ltx_header h = mkhdr(512, 3000, 2, 2);
  uint32_t *pg = malloc(3000 * sizeof(uint32_t));
  raw r;
  decoded dec;
  ltx_error err;
  ck_assert_ptr_nonnull(pg);
  /* 3000 pages: the index (~17 KiB) exceeds LTX_INDEX_TAIL_GUESS. */
  img_resize(&model, 3000);
  for (uint32_t p = 1; p <= 3000; p++) {
    pg[p - 1] = p;
    memset(img_page(&model, p), (int)(p & 0xff), 512);
  }
  encode_pages(&in[0], &h, &model, pg, 3000, 0);
  ck_assert_uint_gt(get_be64(in[0].p + in[0].n - 24), LTX_INDEX_TAIL_GUESS);
  h = mkhdr(512, 3000, 3, 3);
  make_page(img_page(&model, 5), 512, 5, 9);
  make_page(img_page(&model, 6), 512, 6, 9);
  raw_begin(&r, &h);
  raw_legacy(&r, 5, img_page(&model, 5), 512);
  raw_legacy(&r, 6, img_page(&model, 6), 512);
  raw_finish(&r, 0);
  in[1] = r.b;
  compact_bufs(in, 2, &out, NULL, LTX_OK);
  ck_assert_int_eq(decode_stream(out.p, out.n, 0, &dec, &err), LTX_OK);
  ck_assert_uint_eq(dec.n, 3000);
  ck_assert(memcmp(dec.pages, model.p, 3000 * 512) == 0);
  decoded_free(&dec);
  /* Every output frame is current format. */
  {
    ltx_index idx;
    size_t need;
    ck_assert_int_eq(ltx_index_parse_tail(out.p, out.n, out.n, &idx, &need, &err), LTX_OK);
    for (size_t i = 0; i < idx.n; i++) ck_assert_uint_eq(out.p[idx.entries[i].offset + 5], 1);
    ltx_index_free(&idx);
  }
  assert_compaction_applies_like_inputs(&empty, in, 2, &out);
  tu_buf_free(&out);
  tu_buf_free(&in[0]);
  tu_buf_free(&in[1]);
  img_free(&model);
  free(pg);
}
END_TEST

/* Reads the fixture files of one database, in TXID order. */
static size_t read_fixture_chain(const char *db, tu_buf *files, size_t max) {
  size_t n = 0;
  for (uint64_t txid = 1; txid < 64 && n < max; txid++) {
    char name[64], rel[PATH_MAX], path[PATH_MAX];
    size_t len;
    uint8_t *buf;
    snprintf(rel, sizeof(rel), "%s/ltx/0/%s", db, ltx_file_name(txid, txid, name));
    buf = tu_read_file(tu_fixture_path(path, sizeof(path), rel), &len);
    if (buf == NULL) break;
    files[n].p = buf;
    files[n].n = files[n].cap = len;
    n++;
  }
  return n;
}

/* img_sha256 of expected.tsv for (db, txid, view restore), or NULL. */
static const char *expected_img_sha(char *expected, const char *db, uint64_t txid, char *out) {
  char key[128];
  const char *hit;
  int n = snprintf(key, sizeof(key), "%s\t%016llx\trestore\timg_sha256\t", db,
                   (unsigned long long)txid);
  hit = strstr(expected, key);
  if (hit == NULL || (hit != expected && hit[-1] != '\n')) return NULL;
  memcpy(out, hit + n, 64);
  out[64] = '\0';
  return out;
}

/* Compacting the first k files of every fixture database and applying the
** result reproduces the image Litestream's own restore made at TXID k
** (expected.tsv img_sha256: pages 1..commit, page-1 bytes 24..27 and
** 92..95 zeroed), shrinks and the vacuum_then_write regrowth included. */
START_TEST(test_compact_fixture_chains_reproduce_litestream_restore_images) {
  const char *dbs[] = {"main", "vacuum_then_write", "shrink", "ps1024", "ps65536", "ps1024_vfs"};
  const size_t want[] = {11, 3, 2, 4, 3, 2};
  char path[PATH_MAX];
  size_t n_expected, compared = 0;
  char *expected = (char *)tu_read_file(tu_fixture_path(path, sizeof(path), "expected.tsv"), &n_expected);
  ck_assert_ptr_nonnull(expected);
  for (size_t d = 0; d < 6; d++) {
    tu_buf files[16];
    size_t n = read_fixture_chain(dbs[d], files, 16);
    ck_assert_uint_eq(n, want[d]);
    for (size_t k = 1; k <= n; k++) {
      tu_buf out;
      ltx_header oh;
      image empty = {0, 0, NULL}, img = {0, 0, NULL};
      char sha[65], hex[65];
      compact_bufs(files, k, &out, &oh, LTX_OK);
      ck_assert_uint_eq(oh.min_txid, 1);
      ck_assert_uint_eq(oh.max_txid, k);
      img_apply(&img, out.p, out.n);
      empty.ps = img.ps;
      assert_compaction_applies_like_inputs(&empty, files, k, &out);
      /* expected.tsv has no rows for shrink/ (its README states the result
      ** in words); every other database has one per TXID. */
      if (strcmp(dbs[d], "shrink") != 0) {
        ck_assert_ptr_nonnull(expected_img_sha(expected, dbs[d], k, sha));
        memset(img.p + 24, 0, 4);
        memset(img.p + 92, 0, 4);
        ck_assert_msg(strcmp(tu_sha256_hex(img.p, (size_t)img.npages * img.ps, hex), sha) == 0,
                      "%s TXID %zu: image %s, Litestream restore %s", dbs[d], k, hex, sha);
        compared++;
      } else {
        /* Its README: 80 pages after the shrink. */
        ck_assert_uint_eq(img.npages, k == 2 ? 80 : 157);
      }
      img_free(&img);
      tu_buf_free(&out);
    }
    /* The tail of a chain is not a snapshot: applied onto the restored
    ** first file it gives the same image as the files one by one. */
    if (n > 2) {
      image base = {0, 0, NULL};
      tu_buf out;
      ltx_header oh;
      img_apply(&base, files[0].p, files[0].n);
      compact_bufs(files + 1, n - 1, &out, &oh, LTX_OK);
      ck_assert_uint_eq(oh.min_txid, 2);
      assert_compaction_applies_like_inputs(&base, files + 1, n - 1, &out);
      tu_buf_free(&out);
      img_free(&base);
    }
    for (size_t i = 0; i < n; i++) tu_buf_free(&files[i]);
  }
  ck_assert_uint_eq(compared, 23);
  free(expected);
}
END_TEST

/* ------------------------------------------------------------------ */
/* big                                                                  */
/* ------------------------------------------------------------------ */

START_TEST(test_snapshot_across_the_lock_page_round_trips) {
  /* Page size 65536: lock page 16385, so a 16390-page snapshot (1 GiB of
  ** zero pages, ~5 MiB compressed) has to skip it. */
  static uint8_t page[65536];
  tu_buf f;
  ltx_header h = mkhdr(65536, 16390, 1, 1);
  ltx_encoder *e = NULL;
  ltx_error err;
  decoded dec;
  memset(&f, 0, sizeof(f));
  ck_assert_int_eq(ltx_encoder_open(&e, &h, mem_write, &f, &err), LTX_OK);
  for (uint32_t p = 1; p <= 16390; p++) {
    if (p == 16385) continue;
    page[0] = (uint8_t)p;
    ck_assert_int_eq(ltx_encoder_put(e, p, page, &err), LTX_OK);
  }
  ck_assert_int_eq(ltx_encoder_close(e, 0, &err), LTX_OK);
  ltx_encoder_free(e);
  ck_assert_int_eq(ltx_verify_buffer(f.p, f.n, NULL, NULL, &err), LTX_OK);
  ck_assert_int_eq(ltx_index_parse_tail(f.p, f.n, f.n, &dec.idx, NULL, &err), LTX_OK);
  ck_assert_uint_eq(dec.idx.n, 16389);
  ck_assert_ptr_null(ltx_index_find(&dec.idx, 16385));
  ltx_index_free(&dec.idx);
  tu_buf_free(&f);
}
END_TEST

/* ------------------------------------------------------------------ */

static Suite *ltx_suite(void) {
  Suite *s = suite_create("ltx");
  TCase *tc;

  suite_add_tcase(s, ltx_crc_tcase());

  tc = tcase_create("header");
  tcase_add_test(tc, test_header_round_trips_every_field);
  tcase_add_test(tc, test_header_bad_magic_is_LTX_ERR_MAGIC);
  tcase_add_test(tc, test_header_unknown_flag_is_LTX_ERR_FLAGS);
  tcase_add_test(tc, test_header_page_size_must_be_power_of_two_512_to_65536);
  tcase_add_test(tc, test_header_txid_rules_are_LTX_ERR_TXID);
  tcase_add_test(tc, test_header_pre_apply_checksum_form_is_LTX_ERR_HEADER);
  tcase_add_test(tc, test_file_name_round_trips_and_rejects_other_names);
  tcase_add_test(tc, test_err_name_names_known_codes_and_numbers_others);
  tcase_add_test(tc, test_error_prefix_prepends_and_stays_terminated);
  suite_add_tcase(s, tc);

  tc = tcase_create("fixtures");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_fixtures_verify_and_match_manifest);
  tcase_add_test(tc, test_every_fixture_file_verifies_in_all_three_decoders);
  tcase_add_test(tc, test_byte_at_a_time_reader_decodes_fixture);
  tcase_add_test(tc, test_shrink_fixture_holds_only_the_changed_pages);
  tcase_add_test(tc, test_decoder_without_checksum_verification_skips_file_checksum);
  suite_add_tcase(s, tc);

  tc = tcase_create("roundtrip");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_encoder_decoder_round_trip_every_page_size);
  tcase_add_test(tc, test_encoder_writes_litestream_layout);
  tcase_add_test(tc, test_checksummed_mode_round_trip_with_db_checksums);
  tcase_add_test(tc, test_encoder_rejects_misuse_without_writing);
  tcase_add_test(tc, test_encoder_write_failure_is_sticky);
  suite_add_tcase(s, tc);

  tc = tcase_create("legacy");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_legacy_frames_decode_streaming_and_random_access);
  tcase_add_test(tc, test_legacy_frame_not_one_page_is_LTX_ERR_DECOMPRESS);
  tcase_add_test(tc, test_legacy_frame_corrupt_content_checksum_is_LTX_ERR_DECOMPRESS);
  tcase_add_test(tc, test_frame_decode_checks_page_and_length);
  suite_add_tcase(s, tc);

  tc = tcase_create("malformed");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_bad_magic_flags_page_size_are_specific_codes);
  tcase_add_test(tc, test_pages_out_of_order_are_LTX_ERR_PAGE_ORDER);
  tcase_add_test(tc, test_snapshot_missing_page_is_LTX_ERR_SNAPSHOT);
  tcase_add_test(tc, test_bad_page_flags_and_csize_are_LTX_ERR_FRAME);
  tcase_add_test(tc, test_frame_running_past_end_is_LTX_ERR_TRUNCATED);
  tcase_add_test(tc, test_decompression_not_one_page_is_LTX_ERR_DECOMPRESS);
  tcase_add_test(tc, test_index_disagreeing_with_frames_is_LTX_ERR_INDEX);
  tcase_add_test(tc, test_index_pointing_outside_file_is_LTX_ERR_INDEX);
  tcase_add_test(tc, test_wrong_file_checksum_is_LTX_ERR_FILE_CHECKSUM);
  tcase_add_test(tc, test_bytes_after_trailer_are_LTX_ERR_TRAILING);
  tcase_add_test(tc, test_every_truncation_is_LTX_ERR_TRUNCATED);
  tcase_add_test(tc, test_decoder_reports_read_errors_and_misuse);
  suite_add_tcase(s, tc);

  tc = tcase_create("index");
  tcase_add_test(tc, test_index_parse_short_tail_reports_need);
  tcase_add_test(tc, test_index_parse_rejects_malformed_varints);
  suite_add_tcase(s, tc);

  tc = tcase_create("compact");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_compact_three_files_with_shrink_newest_wins);
  tcase_add_test(tc, test_compact_regrowth_after_shrink_keeps_older_pages_like_litestream);
  tcase_add_test(tc, test_compact_checksummed_inputs_keep_checksums);
  tcase_add_test(tc, test_compact_requires_contiguous_txids_and_one_page_size);
  tcase_add_test(tc, test_compact_recompresses_legacy_and_reads_large_indexes);
  tcase_add_test(tc, test_compact_fixture_chains_reproduce_litestream_restore_images);
  suite_add_tcase(s, tc);

  tc = tcase_create("big");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_snapshot_across_the_lock_page_round_trips);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run_suite(ltx_suite()); }
