/*
** frame.c: one page frame, decoded from memory.
**
** Two frame kinds exist (docs/ltx-format.md, "Page block"):
**
**   current  pgno u32 | flags 0x0001 | csize u32 | one raw LZ4 block
**   legacy   pgno u32 | flags 0x0000 | one LZ4F frame (no size prefix)
**
** Current frames, written by Litestream >= v0.5.16 and by our encoder, are
** one LZ4_decompress_safe call into the caller's page. Legacy frames, written
** by v0.5.0 - v0.5.15, carry the LZ4 frame format with its own header, blocks,
** end mark and content checksum; their length is not stored in the frame, so
** a sequential reader finds the end by feeding LZ4F_decompress until it
** reports the frame complete (ltx_legacy_step), and a random-access reader
** takes it from the page index.
**
** Not done here: keeping an LZ4F context across calls of ltx_frame_decode.
** A legacy frame read at random costs one context allocation; legacy files
** are old and become rarer with every compaction, so the interface stays
** stateless instead.
*/
#include "config.h"

#include <lz4.h>

#include "ltx/ltx_int.h"

int ltx_legacy_step(LZ4F_dctx *dctx, const uint8_t *src, size_t *n_src, uint8_t *page,
                    uint32_t page_size, size_t *produced, int *done, ltx_error *err) {
  int rc = LTX_OK;
  size_t avail = *n_src, used = 0;

  *done = 0;
  for (;;) {
    size_t dsz = page_size - *produced, ssz = avail - used;
    size_t hint = LZ4F_decompress(dctx, page + *produced, &dsz, src + used, &ssz, NULL);
    if (LZ4F_isError(hint)) {
      rc = ltx_error_set(err, LTX_ERR_DECOMPRESS, "legacy LZ4 frame: %s", LZ4F_getErrorName(hint));
      goto out;
    }
    used += ssz;
    *produced += dsz;
    if (hint == 0) {
      if (*produced != page_size) {
        rc = ltx_error_set(err, LTX_ERR_DECOMPRESS,
                           "legacy LZ4 frame holds %zu bytes, the page size is %u", *produced,
                           page_size);
        goto out;
      }
      *done = 1;
      goto out;
    }
    if (ssz == 0 && dsz == 0) {
      /* No progress. Without input left the caller must bring more; with
      ** input left and the page full, LZ4F sits on output that does not fit:
      ** the frame holds more than one page. */
      if (used == avail) goto out;
      if (*produced == page_size)
        rc = ltx_error_set(err, LTX_ERR_DECOMPRESS,
                           "legacy LZ4 frame holds more than one page (%u bytes)", page_size);
      else
        rc = ltx_error_set(err, LTX_ERR_DECOMPRESS,
                           "legacy LZ4 frame stalls before filling a page of %u bytes", page_size);
      goto out;
    }
  }
out:
  *n_src = used;
  return rc;
}

int ltx_frame_decode(const uint8_t *frame, size_t n, uint32_t expect_pgno, uint32_t page_size,
                     uint8_t *page, ltx_error *err) {
  int rc = LTX_OK;
  LZ4F_dctx *dctx = NULL;
  uint32_t pgno;
  uint16_t flags;

  if (page_size < LTX_MIN_PAGE_SIZE || page_size > LTX_MAX_PAGE_SIZE ||
      (page_size & (page_size - 1)) != 0) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "page size %u", page_size);
    goto out;
  }
  if (n < LTX_FRAME_HEADER_SIZE) {
    rc = ltx_error_set(err, LTX_ERR_TRUNCATED, "frame of %zu bytes is shorter than its header", n);
    goto out;
  }
  pgno = ltx_get_be32(frame);
  flags = ltx_get_be16(frame + 4);
  if (pgno == 0) {
    rc = ltx_error_set(err, LTX_ERR_PAGE_ORDER, "frame holds page 0");
    goto out;
  }
  if (expect_pgno != 0 && pgno != expect_pgno) {
    rc = ltx_error_set(err, LTX_ERR_INDEX, "frame holds page %u, the index says page %u", pgno,
                       expect_pgno);
    goto out;
  }
  if (flags & ~LTX_PAGE_FLAG_SIZE) {
    rc = ltx_error_set(err, LTX_ERR_FRAME, "page %u: unknown page flags 0x%04x", pgno, flags);
    goto out;
  }
  if (flags & LTX_PAGE_FLAG_SIZE) {
    uint32_t csize;
    int got;
    if (n < LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE) {
      rc = ltx_error_set(err, LTX_ERR_TRUNCATED, "page %u: frame of %zu bytes ends inside csize",
                         pgno, n);
      goto out;
    }
    csize = ltx_get_be32(frame + LTX_FRAME_HEADER_SIZE);
    if (csize == 0 || csize > ltx_csize_max(page_size)) {
      rc = ltx_error_set(err, LTX_ERR_FRAME,
                         "page %u: csize %u impossible for page size %u (1..%u)", pgno, csize,
                         page_size, ltx_csize_max(page_size));
      goto out;
    }
    if (csize > n - LTX_FRAME_HEADER_SIZE - LTX_FRAME_CSIZE_SIZE) {
      rc = ltx_error_set(err, LTX_ERR_TRUNCATED,
                         "page %u: LZ4 block of %u bytes runs past the frame's %zu bytes", pgno,
                         csize, n);
      goto out;
    }
    if (csize < n - LTX_FRAME_HEADER_SIZE - LTX_FRAME_CSIZE_SIZE) {
      rc = ltx_error_set(err, LTX_ERR_FRAME, "page %u: %zu bytes after the LZ4 block of %u bytes",
                         pgno, n - LTX_FRAME_HEADER_SIZE - LTX_FRAME_CSIZE_SIZE - csize, csize);
      goto out;
    }
    got = LZ4_decompress_safe((const char *)frame + LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE,
                              (char *)page, (int)csize, (int)page_size);
    if (got < 0) {
      rc = ltx_error_set(err, LTX_ERR_DECOMPRESS,
                         "page %u: corrupt LZ4 block or more than %u bytes", pgno, page_size);
      goto out;
    }
    if (got != (int)page_size) {
      rc = ltx_error_set(err, LTX_ERR_DECOMPRESS,
                         "page %u: LZ4 block gives %d bytes, the page size is %u", pgno, got,
                         page_size);
      goto out;
    }
  } else {
    size_t used = n - LTX_FRAME_HEADER_SIZE, produced = 0;
    int done = 0;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION))) {
      dctx = NULL;
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "page %u: LZ4F context", pgno);
      goto out;
    }
    rc = ltx_legacy_step(dctx, frame + LTX_FRAME_HEADER_SIZE, &used, page, page_size, &produced,
                         &done, err);
    if (rc != LTX_OK) {
      ltx_error_prefix(err, "page %u", pgno);
      goto out;
    }
    if (!done) {
      rc = ltx_error_set(err, LTX_ERR_TRUNCATED,
                         "page %u: legacy LZ4 frame runs past the frame's %zu bytes", pgno, n);
      goto out;
    }
    if (used != n - LTX_FRAME_HEADER_SIZE) {
      rc = ltx_error_set(err, LTX_ERR_FRAME,
                         "page %u: legacy LZ4 frame ends after %zu bytes, %zu bytes before the "
                         "end of the frame",
                         pgno, used + LTX_FRAME_HEADER_SIZE, n - LTX_FRAME_HEADER_SIZE - used);
      goto out;
    }
  }
out:
  if (dctx != NULL) LZ4F_freeDecompressionContext(dctx);
  return rc;
}
