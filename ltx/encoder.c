/*
** encoder.c: writes an LTX file that Litestream reads.
**
** Output is always the current format (docs/ltx-format.md): each page becomes
** `pgno | flags 0x0001 | csize | LZ4 block` (LZ4_compress_default), then the
** terminator, the page index, its length and the trailer with the file
** checksum. Bytes go out through the caller's write callback as they are
** produced: one write per page and one for everything after the last page,
** so memory is one compressed frame plus the index entries.
**
** Modes. The default docs/ltx-format.md ("Writing files other tools can read") calls for: flags 0x2
** (NoChecksum), pre-apply = post-apply = 0; Litestream's compactor, restore
** and hydration reject anything else. Checksummed mode (flags 0) is there for
** tests and for readers that want database checksums; there a snapshot's
** post-apply checksum is computed from its pages and must equal the one the
** caller passes to ltx_encoder_close.
**
** Rules enforced before anything is written, so a rejected call leaves the
** file intact (LTX_ERR_ARG, not sticky): pages strictly ascending,
** 1 <= pgno <= commit, never the lock page. A snapshot must be gapless
** (LTX_ERR_SNAPSHOT, at the page that skips and again at close). Header
** fields are checked as a reader would, plus the WAL-field rules of
** Litestream's Header.Validate (a non-negative WAL offset and size, a WAL
** offset when a size or salt is given) since Litestream refuses a file that
** breaks them. A failed write is sticky: the file is unusable.
*/
#include "config.h"

#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "ltx/ltx_int.h"

/* Bytes of one index entry at most: three varints of a u32, a u64, a u32. */
#define MAX_ENTRY_BYTES (5 + 10 + 5)

enum { ST_OPEN, ST_CLOSED, ST_FAILED };

struct ltx_encoder {
  ltx_write_fn write;
  void *ctx;
  ltx_header hdr;
  uint32_t lock_pgno;
  int snapshot;
  int track_db; /* checksummed snapshot: fold page checksums */
  int state, fail_code;
  uint32_t prev_pgno;
  uint64_t n;   /* bytes written */
  uint64_t crc; /* running file checksum (without the flag) */
  uint64_t db;  /* running database checksum */
  uint8_t *frame; /* frame header, csize and LZ4 block of one page */
  ltx_page_entry *idx;
  size_t n_idx, cap_idx;
};

static int emit(ltx_encoder *e, const uint8_t *buf, size_t len, ltx_error *err) {
  int rc = e->write(e->ctx, buf, len, err);
  if (rc != LTX_OK) {
    ltx_error_prefix(err, "writing %zu bytes at offset %llu", len, (unsigned long long)e->n);
    e->state = ST_FAILED;
    e->fail_code = rc;
  } else {
    e->n += len;
  }
  return rc;
}

size_t ltx_uvarint_put(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

static uint64_t snapshot_next(const ltx_encoder *e, uint32_t prev) {
  uint64_t next = (uint64_t)prev + 1;
  if (next == e->lock_pgno) next++;
  return next;
}

/* Litestream's Header.Validate rules on the informational WAL fields. */
static int check_interop(const ltx_header *h, ltx_error *err) {
  int rc = LTX_OK;
  if ((int64_t)h->wal_offset < 0 || (int64_t)h->wal_size < 0) {
    rc = ltx_error_set(err, LTX_ERR_HEADER, "WAL offset %llu / size %llu: must fit in int64",
                       (unsigned long long)h->wal_offset, (unsigned long long)h->wal_size);
  } else if ((h->wal_salt1 != 0 || h->wal_salt2 != 0) && h->wal_offset == 0) {
    rc = ltx_error_set(err, LTX_ERR_HEADER, "WAL salts given without a WAL offset");
  } else if (h->wal_offset == 0 && h->wal_size != 0) {
    rc = ltx_error_set(err, LTX_ERR_HEADER, "WAL size %llu given without a WAL offset",
                       (unsigned long long)h->wal_size);
  }
  return rc;
}

int ltx_encoder_open(ltx_encoder **out, const ltx_header *h, ltx_write_fn write, void *ctx,
                     ltx_error *err) {
  int rc = LTX_OK;
  ltx_encoder *e = NULL;
  uint8_t buf[LTX_HEADER_SIZE];

  *out = NULL;
  if (write == NULL) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "ltx_encoder_open without a write callback");
    goto out;
  }
  rc = ltx_header_validate(h, err);
  if (rc == LTX_OK) rc = check_interop(h, err);
  if (rc != LTX_OK) goto out;
  e = calloc(1, sizeof(*e));
  if (e == NULL ||
      (e->frame = malloc(LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE +
                         ltx_csize_max(h->page_size))) == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "LTX encoder");
    goto out;
  }
  e->write = write;
  e->ctx = ctx;
  e->hdr = *h;
  e->lock_pgno = ltx_lock_pgno(h->page_size);
  e->snapshot = ltx_header_is_snapshot(h);
  e->track_db = e->snapshot && !(h->flags & LTX_HEADER_FLAG_NO_CHECKSUM);
  e->db = LTX_CHECKSUM_FLAG; /* an empty database, as Go's decoder has it */
  e->state = ST_OPEN;
  ltx_header_encode(h, buf);
  e->crc = ltx_crc64(0, buf, LTX_HEADER_SIZE);
  rc = emit(e, buf, LTX_HEADER_SIZE, err);
  if (rc != LTX_OK) goto out;
  *out = e;
  e = NULL;
out:
  ltx_encoder_free(e);
  return rc;
}

static int check_state(const ltx_encoder *e, ltx_error *err) {
  int rc = LTX_OK;
  if (e->state == ST_FAILED)
    rc = ltx_error_set(err, e->fail_code, "encoder stopped by an earlier write error");
  else if (e->state == ST_CLOSED)
    rc = ltx_error_set(err, LTX_ERR_ARG, "encoder already closed");
  return rc;
}

static int check_pgno(const ltx_encoder *e, uint32_t pgno, ltx_error *err) {
  int rc = LTX_OK;
  if (pgno == 0 || pgno <= e->prev_pgno) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "page %u after page %u: pages must strictly ascend from 1",
                       pgno, e->prev_pgno);
  } else if (pgno > e->hdr.commit) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "page %u is above commit %u", pgno, e->hdr.commit);
  } else if (pgno == e->lock_pgno) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "page %u is the lock page, which is never stored", pgno);
  } else if (e->snapshot && pgno != snapshot_next(e, e->prev_pgno)) {
    rc = ltx_error_set(err, LTX_ERR_SNAPSHOT, "snapshot skips page %llu: page %u follows page %u",
                       (unsigned long long)snapshot_next(e, e->prev_pgno), pgno, e->prev_pgno);
  }
  return rc;
}

/* Writes the frame of page pgno: its LZ4 block is either already in
** e->frame (block == e->frame + 10, one write) or elsewhere (two writes). */
static int put_frame(ltx_encoder *e, uint32_t pgno, const uint8_t *page, const uint8_t *block,
                     uint32_t csize, ltx_error *err) {
  int rc = LTX_OK;
  uint8_t *hdr = e->frame;
  uint64_t off = e->n;
  size_t fsize = LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE + (size_t)csize;

  if (e->n_idx == e->cap_idx) {
    size_t cap = e->cap_idx ? e->cap_idx * 2 : 256;
    ltx_page_entry *grown = realloc(e->idx, cap * sizeof(*grown));
    if (grown == NULL) {
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "page index of %zu entries", cap);
      goto out;
    }
    e->idx = grown;
    e->cap_idx = cap;
  }
  ltx_put_be32(hdr, pgno);
  ltx_put_be16(hdr + 4, LTX_PAGE_FLAG_SIZE);
  ltx_put_be32(hdr + LTX_FRAME_HEADER_SIZE, csize);
  e->crc = ltx_crc64(e->crc, hdr, LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE);
  if (block == hdr + LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE) {
    rc = emit(e, hdr, fsize, err);
  } else {
    rc = emit(e, hdr, LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE, err);
    if (rc == LTX_OK) rc = emit(e, block, csize, err);
  }
  if (rc != LTX_OK) goto out;
  e->crc = ltx_crc64(e->crc, page, e->hdr.page_size);
  if (e->track_db) e->db = ltx_db_checksum_fold(e->db, ltx_page_checksum(pgno, page, e->hdr.page_size));
  e->idx[e->n_idx].pgno = pgno;
  e->idx[e->n_idx].offset = off;
  e->idx[e->n_idx].size = (uint32_t)fsize;
  e->n_idx++;
  e->prev_pgno = pgno;
out:
  return rc;
}

int ltx_encoder_put(ltx_encoder *e, uint32_t pgno, const uint8_t *page, ltx_error *err) {
  int rc = check_state(e, err);
  uint8_t *block = e->frame + LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE;
  int csize;

  if (rc == LTX_OK) rc = check_pgno(e, pgno, err);
  if (rc != LTX_OK) goto out;
  csize = LZ4_compress_default((const char *)page, (char *)block, (int)e->hdr.page_size,
                               (int)ltx_csize_max(e->hdr.page_size));
  if (csize <= 0) {
    /* Cannot happen with a LZ4_compressBound buffer; fail cleanly if it does. */
    rc = ltx_error_set(err, LTX_ERR_FRAME, "page %u: LZ4 compression failed", pgno);
    goto out;
  }
  rc = put_frame(e, pgno, page, block, (uint32_t)csize, err);
out:
  return rc;
}

int ltx_encoder_put_block(ltx_encoder *e, uint32_t pgno, const uint8_t *page,
                          const uint8_t *block, uint32_t csize, ltx_error *err) {
  int rc = check_state(e, err);
  if (rc == LTX_OK) rc = check_pgno(e, pgno, err);
  if (rc != LTX_OK) goto out;
  if (csize == 0 || csize > ltx_csize_max(e->hdr.page_size)) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "page %u: block of %u bytes", pgno, csize);
    goto out;
  }
  rc = put_frame(e, pgno, page, block, csize, err);
out:
  return rc;
}

int ltx_encoder_close(ltx_encoder *e, uint64_t post_apply_checksum, ltx_error *err) {
  int rc = check_state(e, err);
  uint8_t *tail = NULL, *p;
  size_t isz;

  if (rc != LTX_OK) goto out;
  if (e->snapshot && snapshot_next(e, e->prev_pgno) <= e->hdr.commit) {
    rc = ltx_error_set(err, LTX_ERR_SNAPSHOT, "snapshot lacks pages %llu..%u after page %u",
                       (unsigned long long)snapshot_next(e, e->prev_pgno), e->hdr.commit,
                       e->prev_pgno);
    goto out;
  }
  if (e->hdr.flags & LTX_HEADER_FLAG_NO_CHECKSUM) {
    if (post_apply_checksum != 0) {
      rc = ltx_error_set(err, LTX_ERR_ARG,
                         "post-apply checksum %016llx in NoChecksum mode: must be 0",
                         (unsigned long long)post_apply_checksum);
      goto out;
    }
  } else if ((post_apply_checksum & LTX_CHECKSUM_FLAG) == 0) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "post-apply checksum %016llx: bit 63 must be set",
                       (unsigned long long)post_apply_checksum);
    goto out;
  } else if (e->track_db && post_apply_checksum != e->db) {
    rc = ltx_error_set(err, LTX_ERR_DB_CHECKSUM,
                       "snapshot post-apply checksum %016llx, its pages give %016llx",
                       (unsigned long long)post_apply_checksum, (unsigned long long)e->db);
    goto out;
  }
  /* Terminator, index, isz and trailer go out in one write. */
  tail = malloc(LTX_TERMINATOR_SIZE + e->n_idx * MAX_ENTRY_BYTES + 1 + 8 + LTX_TRAILER_SIZE);
  if (tail == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "page index of %zu entries", e->n_idx);
    goto out;
  }
  memset(tail, 0, LTX_TERMINATOR_SIZE);
  p = tail + LTX_TERMINATOR_SIZE;
  for (size_t i = 0; i < e->n_idx; i++) {
    p += ltx_uvarint_put(p, e->idx[i].pgno);
    p += ltx_uvarint_put(p, e->idx[i].offset);
    p += ltx_uvarint_put(p, e->idx[i].size);
  }
  *p++ = 0;
  isz = (size_t)(p - tail) - LTX_TERMINATOR_SIZE;
  ltx_put_be64(p, isz);
  p += 8;
  ltx_put_be64(p, post_apply_checksum);
  e->crc = ltx_crc64(e->crc, tail, (size_t)(p - tail) + 8);
  ltx_put_be64(p + 8, LTX_CHECKSUM_FLAG | e->crc);
  p += LTX_TRAILER_SIZE;
  rc = emit(e, tail, (size_t)(p - tail), err);
  if (rc != LTX_OK) goto out;
  e->state = ST_CLOSED;
out:
  free(tail);
  return rc;
}

uint64_t ltx_encoder_size(const ltx_encoder *e) { return e->n; }

void ltx_encoder_free(ltx_encoder *e) {
  if (e != NULL) {
    free(e->frame);
    free(e->idx);
    free(e);
  }
}

int ltx_membuf_write(void *ctx, const uint8_t *buf, size_t n, ltx_error *err) {
  ltx_membuf *mb = ctx;
  if (n > SIZE_MAX - mb->len) /* Catch size_t overflow */
    return ltx_error_set(err, LTX_ERR_NOMEM, "memory buffer would exceed SIZE_MAX");
  if (mb->len + n > mb->cap) {
    size_t cap = mb->cap ? mb->cap : 1 << 20;
    while (cap < mb->len + n) cap = cap > SIZE_MAX / 2 ? mb->len + n : cap * 2;
    uint8_t *grown = realloc(mb->buf, cap);
    if (!grown) return ltx_error_set(err, LTX_ERR_NOMEM, "memory buffer of %zu bytes", cap);
    mb->buf = grown;
    mb->cap = cap;
  }
  memcpy(mb->buf + mb->len, buf, n);
  mb->len += n;
  return LTX_OK;
}

void ltx_membuf_free(ltx_membuf *mb) {
  free(mb->buf);
  *mb = (ltx_membuf){0};
}
