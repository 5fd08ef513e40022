/*
** fuzz_ltx_decode.c: libFuzzer target for every LTX decoding path.
**
** One input goes through:
**
**   1. ltx_verify_buffer, the in-place decoder;
**   2. ltx_index_parse_tail from a short tail first (exercising *need), then
**      ltx_frame_decode on every entry, as a random-access reader would;
**   3. the streaming decoder, through a reader that hands out 1..7 bytes per
**      call so every structure is split at every possible point.
**
** Besides "no crash, no sanitizer report", two oracles abort on a logic
** error: the buffer and stream decoders run the same engine and must return
** the same code; and a file that verifies must also parse from its tail and
** decode frame by frame. Built with -fsanitize=fuzzer by tests/fuzz/run.sh,
** and with tests/fuzz/replay_main.c into tests/fuzz_replay for `make check`.
*/
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ltx/ltx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A reader of tiny, varying chunks. */
typedef struct chunk_reader {
  const uint8_t *p;
  size_t n, pos;
  unsigned step;
} chunk_reader;

static int chunk_read(void *ctx, uint8_t *buf, size_t n, size_t *nread, ltx_error *err) {
  chunk_reader *r = ctx;
  size_t k = r->n - r->pos, want = 1 + (r->step++ * 5u + 3u) % 7u;
  (void)err;
  if (k > n) k = n;
  if (k > want) k = want;
  memcpy(buf, r->p + r->pos, k);
  r->pos += k;
  *nread = k;
  return LTX_OK;
}

static void fail(const char *what, int a, int b) {
  fprintf(stderr, "fuzz_ltx_decode: %s (%s vs %s)\n", what, ltx_err_name(a), ltx_err_name(b));
  abort();
}

/* The header's page size if it is valid, else 4096: frames are decoded with
** the size a reader would take from the header. */
static uint32_t page_size_of(const uint8_t *data, size_t size) {
  uint32_t ps = 4096;
  if (size >= 12) {
    uint32_t v = (uint32_t)data[8] << 24 | (uint32_t)data[9] << 16 | (uint32_t)data[10] << 8 | data[11];
    if (v >= LTX_MIN_PAGE_SIZE && v <= LTX_MAX_PAGE_SIZE && (v & (v - 1)) == 0) ps = v;
  }
  return ps;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static uint8_t page[LTX_MAX_PAGE_SIZE];
  ltx_error err;
  ltx_index idx = {NULL, 0};
  ltx_decoder *d = NULL;
  chunk_reader r = {data, size, 0, size > 0 ? data[0] : 0};
  size_t need = 0, tail = size < 40 ? size : 40;
  uint32_t ps = page_size_of(data, size);
  int rc_buf, rc_idx, rc_stream;

  rc_buf = ltx_verify_buffer(data, size, NULL, NULL, &err);

  rc_idx = ltx_index_parse_tail(data + size - tail, tail, size, &idx, &need, &err);
  if (rc_idx == LTX_ERR_TRUNCATED && need > tail && need <= size)
    rc_idx = ltx_index_parse_tail(data + size - need, need, size, &idx, &need, &err);
  if (rc_buf == LTX_OK && rc_idx != LTX_OK) fail("verified file whose index does not parse", rc_buf, rc_idx);
  if (rc_idx == LTX_OK) {
    for (size_t i = 0; i < idx.n; i++) {
      const ltx_page_entry *e = &idx.entries[i];
      int rc = ltx_frame_decode(data + e->offset, e->size, e->pgno, ps, page, &err);
      if (rc_buf == LTX_OK && rc != LTX_OK) fail("verified file with an undecodable frame", rc_buf, rc);
      if (ltx_index_find(&idx, e->pgno) != e) fail("index lookup", 0, 0);
    }
    ltx_index_free(&idx);
  }

  rc_stream = ltx_decoder_open(&d, chunk_read, &r, &err);
  if (rc_stream == LTX_OK) {
    uint32_t pgno;
    while ((rc_stream = ltx_decoder_next(d, &pgno, page, &err)) == LTX_OK) continue;
    if (rc_stream == LTX_DONE) {
      rc_stream = ltx_decoder_finish(d, NULL, &idx, &err);
      ltx_index_free(&idx);
    }
    ltx_decoder_free(d);
  }
  if (rc_stream != rc_buf) fail("stream and buffer decoders disagree", rc_stream, rc_buf);
  return 0;
}
