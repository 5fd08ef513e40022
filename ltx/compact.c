/*
** compact.c: merges consecutive LTX files into one.
**
** Inputs are random-access sources (ltx_source), oldest first. Each one's
** header and page index are read first (the index from one suffix read of
** LTX_INDEX_TAIL_GUESS bytes, a second read when it is larger), then pages
** are produced in ascending order by walking all indexes at once. For every
** page only the frame that wins is read and decoded: memory is the indexes,
** one page and one frame, whatever the number and size of the inputs.
**
** Which page is written: for each page p <= the final commit, the frame of
** the newest input that holds p; pages above the final commit are dropped.
** That is Litestream's compactor, and also what Litestream's restore gives:
** a shrink drops pages only for good when the final commit is below them. A
** page that an input truncated and a later input grew back over without
** writing keeps its older content (fixture vacuum_then_write, TXID 3: the
** restore image of expected.tsv has the stale pages 13..65 of TXID 1, not
** zeros, although docs/restore-plan.md would truncate after every file).
**
** Contiguity is Litestream's ltx.IsContiguous: min[i] <= max[i-1] + 1 and
** max[i] > max[i-1]. Overlap is allowed since Litestream's own levels
** overlap (docs/restore-plan.md); the newer file's pages win there as well.
**
** The output header follows Litestream's compactor: page size, min TXID and
** pre-apply checksum from the first input; commit, max TXID, timestamp and
** post-apply checksum from the last; WAL fields and node id zero. It is
** NoChecksum (with zero checksums) when any input is.
**
** Not done: verifying each input's file checksum, which would need every
** frame of every input, not only the winners. Each frame that is copied is
** decoded in full (exactly one page), its index checked against its header,
** and current-format blocks are copied without being compressed again.
*/
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "ltx/ltx_int.h"

typedef struct compact_input {
  ltx_header hdr;
  ltx_trailer trailer;
  ltx_index idx;
  size_t cur; /* next index entry to merge */
} compact_input;

static int read_source(const ltx_source *src, uint64_t off, uint8_t *buf, size_t n,
                       ltx_error *err) {
  int rc = src->read_at(src->ctx, off, buf, n, err);
  if (rc != LTX_OK) ltx_error_prefix(err, "reading %zu bytes at offset %llu", n, (unsigned long long)off);
  return rc;
}

/* Reads header, index and trailer of one input and checks that its pages fit
** its header. */
static int load_input(const ltx_source *src, compact_input *in, ltx_error *err) {
  int rc = LTX_OK;
  uint8_t hbuf[LTX_HEADER_SIZE];
  uint8_t *tail = NULL;
  size_t n_tail, need = 0;
  uint32_t lock;
  uint64_t expect_n;

  if (src->size < LTX_HEADER_SIZE) {
    rc = ltx_error_set(err, LTX_ERR_TRUNCATED, "file of %llu bytes has no header",
                       (unsigned long long)src->size);
    goto out;
  }
  rc = read_source(src, 0, hbuf, LTX_HEADER_SIZE, err);
  if (rc == LTX_OK) rc = ltx_header_decode(hbuf, &in->hdr, err);
  if (rc != LTX_OK) goto out;

  n_tail = src->size < LTX_INDEX_TAIL_GUESS ? (size_t)src->size : LTX_INDEX_TAIL_GUESS;
  for (int attempt = 0; attempt < 2; attempt++) {
    uint8_t *grown = realloc(tail, n_tail);
    if (grown == NULL) {
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "index tail of %zu bytes", n_tail);
      goto out;
    }
    tail = grown;
    rc = read_source(src, src->size - n_tail, tail, n_tail, err);
    if (rc != LTX_OK) goto out;
    rc = ltx_index_parse_tail(tail, n_tail, src->size, &in->idx, &need, err);
    /* The first read may be short of a large index; the second has its size. */
    if (rc != LTX_ERR_TRUNCATED || need <= n_tail) break;
    n_tail = need;
  }
  if (rc != LTX_OK) goto out;
  in->trailer.post_apply_checksum = ltx_get_be64(tail + n_tail - LTX_TRAILER_SIZE);
  in->trailer.file_checksum = ltx_get_be64(tail + n_tail - 8);
  if ((in->hdr.flags & LTX_HEADER_FLAG_NO_CHECKSUM)
          ? in->trailer.post_apply_checksum != 0
          : (in->trailer.post_apply_checksum & LTX_CHECKSUM_FLAG) == 0) {
    rc = ltx_error_set(err, LTX_ERR_DB_CHECKSUM, "post-apply checksum %016llx does not fit flags 0x%x",
                       (unsigned long long)in->trailer.post_apply_checksum, in->hdr.flags);
    goto out;
  }
  lock = ltx_lock_pgno(in->hdr.page_size);
  for (size_t k = 0; k < in->idx.n; k++) {
    uint32_t pgno = in->idx.entries[k].pgno;
    if (pgno > in->hdr.commit || pgno == lock) {
      rc = ltx_error_set(err, LTX_ERR_PAGE_ORDER, "index lists page %u (commit %u, lock page %u)",
                         pgno, in->hdr.commit, lock);
      goto out;
    }
  }
  /* Pages ascend, fit the commit and skip the lock page, so a snapshot is
  ** complete exactly when it has this many. */
  expect_n = in->hdr.commit - (lock <= in->hdr.commit ? 1u : 0u);
  if (ltx_header_is_snapshot(&in->hdr) && in->idx.n != expect_n) {
    rc = ltx_error_set(err, LTX_ERR_SNAPSHOT, "snapshot holds %zu pages, commit %u needs %llu",
                       in->idx.n, in->hdr.commit, (unsigned long long)expect_n);
    goto out;
  }
out:
  free(tail);
  return rc;
}

/* Reads, decodes and writes out the frame of index entry e of one input. */
static int copy_page(const ltx_source *src, const ltx_page_entry *e, uint32_t ps,
                     uint8_t *frame, uint8_t *page, ltx_encoder *enc, ltx_error *err) {
  int rc = LTX_OK;
  if (e->size > ltx_frame_max_size(ps)) {
    rc = ltx_error_set(err, LTX_ERR_FRAME, "page %u: frame of %u bytes at offset %llu is too large",
                       e->pgno, e->size, (unsigned long long)e->offset);
    goto out;
  }
  rc = read_source(src, e->offset, frame, e->size, err);
  if (rc != LTX_OK) goto out;
  rc = ltx_frame_decode(frame, e->size, e->pgno, ps, page, err);
  if (rc != LTX_OK) {
    ltx_error_prefix(err, "frame at offset %llu", (unsigned long long)e->offset);
    goto out;
  }
  if (ltx_get_be16(frame + 4) & LTX_PAGE_FLAG_SIZE) {
    rc = ltx_encoder_put_block(enc, e->pgno, page,
                               frame + LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE,
                               e->size - LTX_FRAME_HEADER_SIZE - LTX_FRAME_CSIZE_SIZE, err);
  } else {
    rc = ltx_encoder_put(enc, e->pgno, page, err); /* legacy: compress anew */
  }
out:
  return rc;
}

int ltx_compact(const ltx_source *inputs, size_t n, ltx_write_fn write, void *ctx,
                ltx_header *out_header, ltx_error *err) {
  return ltx_compact_as(inputs, n, 0, 0, write, ctx, out_header, err);
}

int ltx_compact_as(const ltx_source *inputs, size_t n, uint64_t min_txid, uint64_t max_txid,
                   ltx_write_fn write, void *ctx, ltx_header *out_header, ltx_error *err) {
  int rc = LTX_OK;
  compact_input *in = NULL;
  ltx_encoder *enc = NULL;
  uint8_t *page = NULL, *frame = NULL;
  ltx_header oh;
  uint32_t ps, final_commit;
  int nochecksum = 0;

  if (n == 0) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "ltx_compact without inputs");
    goto out;
  }
  in = calloc(n, sizeof(*in));
  if (in == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "%zu compaction inputs", n);
    goto out;
  }
  for (size_t i = 0; i < n; i++) {
    rc = load_input(&inputs[i], &in[i], err);
    if (rc != LTX_OK) {
      ltx_error_prefix(err, "input %zu", i);
      goto out;
    }
    nochecksum |= (in[i].hdr.flags & LTX_HEADER_FLAG_NO_CHECKSUM) != 0;
    if (i == 0) continue;
    if (in[i].hdr.page_size != in[0].hdr.page_size) {
      rc = ltx_error_set(err, LTX_ERR_PAGE_SIZE, "input %zu has page size %u, input 0 has %u", i,
                         in[i].hdr.page_size, in[0].hdr.page_size);
      goto out;
    }
    /* (1) no gap, (2) the newer file ends later: ltx.IsContiguous. */
    if (!(in[i].hdr.min_txid <= in[i - 1].hdr.max_txid + 1 && /* (1) */
          in[i].hdr.max_txid > in[i - 1].hdr.max_txid)) {      /* (2) */
      rc = ltx_error_set(err, LTX_ERR_CONTIGUITY,
                         "input %zu (TXID %016llx-%016llx) does not follow input %zu (%016llx-%016llx)",
                         i, (unsigned long long)in[i].hdr.min_txid,
                         (unsigned long long)in[i].hdr.max_txid, i - 1,
                         (unsigned long long)in[i - 1].hdr.min_txid,
                         (unsigned long long)in[i - 1].hdr.max_txid);
      goto out;
    }
  }

  ps = in[0].hdr.page_size;
  memset(&oh, 0, sizeof(oh));
  oh.flags = nochecksum ? LTX_HEADER_FLAG_NO_CHECKSUM : 0;
  oh.page_size = ps;
  oh.commit = in[n - 1].hdr.commit;
  oh.min_txid = min_txid ? min_txid : in[0].hdr.min_txid;
  oh.max_txid = max_txid ? max_txid : in[n - 1].hdr.max_txid;
  oh.timestamp_ms = in[n - 1].hdr.timestamp_ms;
  oh.pre_apply_checksum = nochecksum ? 0 : in[0].hdr.pre_apply_checksum;

  page = malloc(ps);
  frame = malloc(ltx_frame_max_size(ps));
  if (page == NULL || frame == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "compaction buffers for page size %u", ps);
    goto out;
  }
  rc = ltx_encoder_open(&enc, &oh, write, ctx, err);
  if (rc != LTX_OK) goto out;

  final_commit = oh.commit;
  for (;;) {
    uint32_t p = 0;
    long j = -1;
    for (size_t i = 0; i < n; i++) {
      if (in[i].cur < in[i].idx.n) {
        uint32_t q = in[i].idx.entries[in[i].cur].pgno;
        if (q <= final_commit && (p == 0 || q < p)) p = q;
      }
    }
    if (p == 0) break;
    /* Every input at p moves on; the last (newest) one wins. */
    for (size_t i = 0; i < n; i++) {
      if (in[i].cur < in[i].idx.n && in[i].idx.entries[in[i].cur].pgno == p) {
        j = (long)i;
        in[i].cur++;
      }
    }
    rc = copy_page(&inputs[j], &in[j].idx.entries[in[j].cur - 1], ps, frame, page, enc, err);
    if (rc != LTX_OK) {
      ltx_error_prefix(err, "input %ld", j);
      goto out;
    }
  }
  rc = ltx_encoder_close(enc, nochecksum ? 0 : in[n - 1].trailer.post_apply_checksum, err);
  if (rc != LTX_OK) goto out;
  if (out_header != NULL) *out_header = oh;
out:
  ltx_encoder_free(enc);
  free(page);
  free(frame);
  if (in != NULL) {
    for (size_t i = 0; i < n; i++) ltx_index_free(&in[i].idx);
    free(in);
  }
  return rc;
}
