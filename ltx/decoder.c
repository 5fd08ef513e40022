/*
** decoder.c: sequential decoding and verification of a whole LTX file.
**
** One engine serves two entry points:
**
**   ltx_decoder_*       pulls bytes through an ltx_read_fn into a read buffer
**                       of one frame plus 16 KiB, so memory stays at one page,
**                       that buffer and the list of frames seen (which becomes
**                       the index) however large the file;
**   ltx_verify_buffer   runs the same engine over a caller's buffer in place:
**                       no read buffer, no copy, each LZ4 block decompressed
**                       straight from the caller's memory into one page.
**
** What is checked, in file order (docs/ltx-format.md):
**
**   header       header.c rules
**   each frame   pgno != 0, strictly ascending, <= commit, not the lock page
**                (LTX_ERR_PAGE_ORDER); a snapshot holds every page
**                1..commit but the lock page (LTX_ERR_SNAPSHOT); page flags
**                0x1 or 0 (LTX_ERR_FRAME); csize 1..LZ4_compressBound
**                (LTX_ERR_FRAME); the block or LZ4F frame gives exactly one
**                page (LTX_ERR_DECOMPRESS)
**   terminator   six zero bytes
**   index        entry k equals frame k exactly: pgno, offset, size; as many
**                entries as frames; isz equals the bytes read (LTX_ERR_INDEX)
**   trailer      nothing after it (LTX_ERR_TRAILING); file checksum
**                (LTX_ERR_FILE_CHECKSUM); post-apply form, and for a
**                checksummed snapshot its value (LTX_ERR_DB_CHECKSUM)
**
** Input that ends early anywhere is LTX_ERR_TRUNCATED, naming the offset.
**
** The file checksum covers the header, each frame's 6-byte header and (for
** current frames) its 4-byte csize as stored, then the decompressed page, the
** terminator, the index with its length, and the post-apply field. A legacy
** frame has no csize, so only its 6 bytes and the page enter the checksum;
** this is what Litestream's Go decoder does (ltx decoder.go, DecodePage).
**
** Legacy frames are decoded through one LZ4F context per decoder, fed with
** whatever the read buffer holds until LZ4F reports the end of the frame;
** the bytes after it stay in the buffer for the next frame.
*/
#include "config.h"

#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "ltx/ltx_int.h"

/* Read buffer beyond one maximal frame: large enough that a stream of small
** frames costs few read calls. */
#define STREAM_SLACK 16384
/* Before the page size is known: enough for the header. */
#define HEADER_BUFFER 4096

enum { ST_PAGES, ST_INDEX, ST_DONE, ST_FAILED };

struct ltx_decoder {
  ltx_read_fn read; /* NULL: the whole file is in `in` (ltx_verify_buffer) */
  void *ctx;
  const uint8_t *in; /* unread input is in[pos..len) */
  uint8_t *own;      /* the read buffer (== in) when reading a stream */
  size_t cap, pos, len;
  uint64_t base; /* file offset of in[0] */
  int eof;

  ltx_header hdr;
  uint32_t lock_pgno;
  int snapshot;
  int verify;   /* compute and check the file checksum */
  int track_db; /* verify && checksummed snapshot: fold page checksums */
  int state, fail_code;
  uint32_t prev_pgno; /* last page returned, 0 before the first */

  uint64_t crc;    /* running file checksum (without the flag) */
  uint64_t db;     /* running database checksum of a snapshot */
  int crc_live;    /* in the index: in[crc_from..pos) is not yet in crc */
  size_t crc_from;

  ltx_page_entry *seen; /* the frames read so far: the index to be */
  size_t n_seen, cap_seen;
  LZ4F_dctx *dctx; /* created at the first legacy frame */
};

static uint64_t offset_of(const ltx_decoder *d) { return d->base + d->pos; }

/* Makes k bytes available at in[pos]. Returns LTX_ERR_TRUNCATED without a
** message when the input ends first (the caller knows what was expected),
** or the read callback's error. k must not exceed the buffer capacity. */
static int fill(ltx_decoder *d, size_t k, ltx_error *err) {
  int rc = LTX_OK;
  if (d->len - d->pos >= k) goto out;
  if (d->read == NULL || d->eof) {
    rc = LTX_ERR_TRUNCATED;
    goto out;
  }
  if (d->cap - d->pos < k) {
    /* Slide the unread bytes to the front; index bytes not yet checksummed
    ** are hashed first since they are about to move. */
    if (d->crc_live) {
      d->crc = ltx_crc64(d->crc, d->in + d->crc_from, d->pos - d->crc_from);
      d->crc_from = 0;
    }
    memmove(d->own, d->own + d->pos, d->len - d->pos);
    d->base += d->pos;
    d->len -= d->pos;
    d->pos = 0;
  }
  while (d->len - d->pos < k) {
    size_t got = 0, room = d->cap - d->len;
    rc = d->read(d->ctx, d->own + d->len, room, &got, err);
    if (rc != LTX_OK) goto out;
    if (got > room) {
      rc = ltx_error_set(err, LTX_ERR_IO, "read callback returned %zu bytes for %zu", got, room);
      goto out;
    }
    if (got == 0) {
      d->eof = 1;
      rc = LTX_ERR_TRUNCATED;
      goto out;
    }
    d->len += got;
  }
out:
  return rc;
}

/* The page that must follow prev in a snapshot. 64-bit: prev may be the
** largest page number. */
static uint64_t snapshot_next(const ltx_decoder *d, uint32_t prev) {
  uint64_t next = (uint64_t)prev + 1;
  if (next == d->lock_pgno) next++;
  return next;
}

static int check_pgno(const ltx_decoder *d, uint32_t pgno, uint64_t off, ltx_error *err) {
  int rc = LTX_OK;
  if (pgno == 0) {
    rc = ltx_error_set(err, LTX_ERR_PAGE_ORDER,
                       "frame at offset %llu holds page 0 (only the terminator may be zero)",
                       (unsigned long long)off);
  } else if (pgno <= d->prev_pgno) {
    rc = ltx_error_set(err, LTX_ERR_PAGE_ORDER,
                       "page %u at offset %llu follows page %u: pages must strictly ascend", pgno,
                       (unsigned long long)off, d->prev_pgno);
  } else if (pgno > d->hdr.commit) {
    rc = ltx_error_set(err, LTX_ERR_PAGE_ORDER, "page %u at offset %llu is above commit %u",
                       pgno, (unsigned long long)off, d->hdr.commit);
  } else if (pgno == d->lock_pgno) {
    rc = ltx_error_set(err, LTX_ERR_PAGE_ORDER,
                       "page %u at offset %llu is the lock page, which is never stored", pgno,
                       (unsigned long long)off);
  } else if (d->snapshot && pgno != snapshot_next(d, d->prev_pgno)) {
    rc = ltx_error_set(err, LTX_ERR_SNAPSHOT,
                       "snapshot lacks page %llu: page %u at offset %llu follows page %u",
                       (unsigned long long)snapshot_next(d, d->prev_pgno), pgno,
                       (unsigned long long)off, d->prev_pgno);
  }
  return rc;
}

static int remember_frame(ltx_decoder *d, uint32_t pgno, uint64_t off, size_t size,
                          ltx_error *err) {
  int rc = LTX_OK;
  if (d->n_seen == d->cap_seen) {
    size_t cap = d->cap_seen ? d->cap_seen * 2 : 256;
    ltx_page_entry *grown = realloc(d->seen, cap * sizeof(*grown));
    if (grown == NULL) {
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "list of %zu frames", cap);
      goto out;
    }
    d->seen = grown;
    d->cap_seen = cap;
  }
  d->seen[d->n_seen].pgno = pgno;
  d->seen[d->n_seen].offset = off;
  d->seen[d->n_seen].size = (uint32_t)size;
  d->n_seen++;
out:
  return rc;
}

/* Reads and validates the header at the start of the input. */
static int decoder_start(ltx_decoder *d, ltx_error *err) {
  int rc = fill(d, LTX_HEADER_SIZE, err);
  if (rc == LTX_ERR_TRUNCATED) {
    rc = ltx_error_set(err, LTX_ERR_TRUNCATED,
                       "input ends after %zu bytes, inside the %d-byte header", d->len - d->pos,
                       LTX_HEADER_SIZE);
  }
  if (rc != LTX_OK) goto out;
  rc = ltx_header_decode(d->in + d->pos, &d->hdr, err);
  if (rc != LTX_OK) goto out;
  d->crc = ltx_crc64(0, d->in + d->pos, LTX_HEADER_SIZE);
  d->pos += LTX_HEADER_SIZE;
  d->lock_pgno = ltx_lock_pgno(d->hdr.page_size);
  d->snapshot = ltx_header_is_snapshot(&d->hdr);
  d->verify = 1;
  d->track_db = d->snapshot && !(d->hdr.flags & LTX_HEADER_FLAG_NO_CHECKSUM);
  /* Go's decoder starts from the flag, so an empty snapshot's checksum is
  ** the flag alone rather than 0. */
  d->db = LTX_CHECKSUM_FLAG;
  d->state = ST_PAGES;
out:
  return rc;
}

/* Decodes the legacy frame of page pgno whose 6-byte header was consumed at
** off; on return *size is the whole frame's size. */
static int decode_legacy(ltx_decoder *d, uint32_t pgno, uint64_t off, uint8_t *page,
                         size_t *size, ltx_error *err) {
  int rc = LTX_OK, done = 0;
  size_t produced = 0, consumed = 0;
  size_t max_payload = ltx_frame_max_size(d->hdr.page_size) - LTX_FRAME_HEADER_SIZE;

  if (d->dctx == NULL && LZ4F_isError(LZ4F_createDecompressionContext(&d->dctx, LZ4F_VERSION))) {
    d->dctx = NULL;
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "LZ4F context for page %u", pgno);
    goto out;
  }
  while (!done) {
    size_t n;
    if (consumed == max_payload) {
      rc = ltx_error_set(err, LTX_ERR_FRAME,
                         "page %u at offset %llu: legacy LZ4 frame longer than %zu bytes", pgno,
                         (unsigned long long)off, max_payload);
      goto out;
    }
    rc = fill(d, 1, err);
    if (rc == LTX_ERR_TRUNCATED) {
      rc = ltx_error_set(err, LTX_ERR_TRUNCATED,
                         "page %u at offset %llu: input ends at offset %llu inside the legacy "
                         "LZ4 frame",
                         pgno, (unsigned long long)off, (unsigned long long)offset_of(d));
    }
    if (rc != LTX_OK) goto out;
    n = d->len - d->pos;
    if (n > max_payload - consumed) n = max_payload - consumed;
    rc = ltx_legacy_step(d->dctx, d->in + d->pos, &n, page, d->hdr.page_size, &produced, &done,
                         err);
    if (rc != LTX_OK) {
      ltx_error_prefix(err, "page %u at offset %llu", pgno, (unsigned long long)off);
      goto out;
    }
    d->pos += n;
    consumed += n;
  }
  *size = LTX_FRAME_HEADER_SIZE + consumed;
out:
  return rc;
}

int ltx_decoder_next(ltx_decoder *d, uint32_t *pgno_out, uint8_t *page, ltx_error *err) {
  int rc = LTX_OK;
  uint32_t ps = d->hdr.page_size, pgno;
  uint16_t flags;
  uint64_t off;
  size_t size = 0;
  const uint8_t *p;

  if (d->state == ST_FAILED) {
    rc = ltx_error_set(err, d->fail_code, "decoder stopped by an earlier error");
    goto out;
  }
  if (d->state != ST_PAGES) {
    rc = LTX_DONE;
    goto out;
  }
  rc = fill(d, LTX_FRAME_HEADER_SIZE, err);
  if (rc == LTX_ERR_TRUNCATED) {
    rc = ltx_error_set(err, LTX_ERR_TRUNCATED,
                       "input ends at offset %llu in the page block, where a frame header or "
                       "the terminator belongs",
                       (unsigned long long)offset_of(d));
  }
  if (rc != LTX_OK) goto out;
  off = offset_of(d);
  p = d->in + d->pos;
  pgno = ltx_get_be32(p);
  flags = ltx_get_be16(p + 4);

  if (pgno == 0 && flags == 0) {
    if (d->verify) d->crc = ltx_crc64(d->crc, p, LTX_TERMINATOR_SIZE);
    d->pos += LTX_TERMINATOR_SIZE;
    if (d->snapshot && snapshot_next(d, d->prev_pgno) <= d->hdr.commit) {
      rc = ltx_error_set(err, LTX_ERR_SNAPSHOT,
                         "snapshot ends at offset %llu after page %u, lacking pages up to commit %u",
                         (unsigned long long)off, d->prev_pgno, d->hdr.commit);
      goto out;
    }
    d->state = ST_INDEX;
    rc = LTX_DONE;
    goto out;
  }
  rc = check_pgno(d, pgno, off, err);
  if (rc != LTX_OK) goto out;
  if (flags & ~LTX_PAGE_FLAG_SIZE) {
    rc = ltx_error_set(err, LTX_ERR_FRAME, "page %u at offset %llu: unknown page flags 0x%04x",
                       pgno, (unsigned long long)off, flags);
    goto out;
  }

  if (flags & LTX_PAGE_FLAG_SIZE) {
    uint32_t csize;
    int got;
    rc = fill(d, LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE, err);
    if (rc == LTX_ERR_TRUNCATED) {
      rc = ltx_error_set(err, LTX_ERR_TRUNCATED, "page %u at offset %llu: input ends inside csize",
                         pgno, (unsigned long long)off);
    }
    if (rc != LTX_OK) goto out;
    csize = ltx_get_be32(d->in + d->pos + LTX_FRAME_HEADER_SIZE);
    if (csize == 0 || csize > ltx_csize_max(ps)) {
      rc = ltx_error_set(err, LTX_ERR_FRAME,
                         "page %u at offset %llu: csize %u impossible for page size %u (1..%u)",
                         pgno, (unsigned long long)off, csize, ps, ltx_csize_max(ps));
      goto out;
    }
    size = LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE + (size_t)csize;
    rc = fill(d, size, err);
    if (rc == LTX_ERR_TRUNCATED) {
      rc = ltx_error_set(err, LTX_ERR_TRUNCATED,
                         "page %u at offset %llu: frame of %zu bytes runs past the end of input "
                         "at offset %llu",
                         pgno, (unsigned long long)off, size,
                         (unsigned long long)(d->base + d->len));
    }
    if (rc != LTX_OK) goto out;
    p = d->in + d->pos;
    got = LZ4_decompress_safe((const char *)p + LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE,
                              (char *)page, (int)csize, (int)ps);
    if (got != (int)ps) {
      if (got < 0)
        rc = ltx_error_set(err, LTX_ERR_DECOMPRESS,
                           "page %u at offset %llu: corrupt LZ4 block or more than %u bytes",
                           pgno, (unsigned long long)off, ps);
      else
        rc = ltx_error_set(err, LTX_ERR_DECOMPRESS,
                           "page %u at offset %llu: LZ4 block gives %d bytes, the page size is %u",
                           pgno, (unsigned long long)off, got, ps);
      goto out;
    }
    if (d->verify) d->crc = ltx_crc64(d->crc, p, LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE);
    d->pos += size;
  } else {
    if (d->verify) d->crc = ltx_crc64(d->crc, p, LTX_FRAME_HEADER_SIZE);
    d->pos += LTX_FRAME_HEADER_SIZE;
    rc = decode_legacy(d, pgno, off, page, &size, err);
    if (rc != LTX_OK) goto out;
  }

  if (d->verify) d->crc = ltx_crc64(d->crc, page, ps);
  if (d->track_db) d->db = ltx_db_checksum_fold(d->db, ltx_page_checksum(pgno, page, ps));
  rc = remember_frame(d, pgno, off, size, err);
  if (rc != LTX_OK) goto out;
  d->prev_pgno = pgno;
  *pgno_out = pgno;
out:
  if (rc != LTX_OK && rc != LTX_DONE) {
    d->state = ST_FAILED;
    d->fail_code = rc;
  }
  return rc;
}

/* One LEB128 varint of the index. Returns LTX_OK, LTX_ERR_TRUNCATED or
** LTX_ERR_INDEX (overflow) without a message, or a read error. */
static int read_uvarint(ltx_decoder *d, uint64_t *v, ltx_error *err) {
  int rc = LTX_OK;
  uint64_t x = 0;
  for (unsigned shift = 0;; shift += 7) {
    uint8_t b;
    rc = fill(d, 1, err);
    if (rc != LTX_OK) goto out;
    b = d->in[d->pos++];
    if (shift == 63 && b > 1) {
      rc = LTX_ERR_INDEX;
      goto out;
    }
    x |= (uint64_t)(b & 0x7f) << shift;
    if (b < 0x80) break;
  }
  *v = x;
out:
  return rc;
}

/* Reads the index and checks it against the frames seen, then isz. */
static int finish_index(ltx_decoder *d, ltx_error *err) {
  int rc = LTX_OK;
  uint64_t start = offset_of(d), isz;
  size_t k = 0;

  d->crc_live = d->verify;
  d->crc_from = d->pos;
  for (;;) {
    uint64_t v[3] = {0, 0, 0};
    uint64_t at = offset_of(d);
    for (int i = 0; i < 3; i++) {
      rc = read_uvarint(d, &v[i], err);
      if (rc == LTX_ERR_TRUNCATED) {
        rc = ltx_error_set(err, LTX_ERR_TRUNCATED,
                           "input ends at offset %llu inside index entry %zu",
                           (unsigned long long)offset_of(d), k);
      } else if (rc == LTX_ERR_INDEX) {
        rc = ltx_error_set(err, LTX_ERR_INDEX, "index entry %zu at offset %llu: varint overflows",
                           k, (unsigned long long)at);
      }
      if (rc != LTX_OK) goto out;
      if (i == 0 && v[0] == 0) break;
    }
    if (v[0] == 0) break;
    if (k == d->n_seen) {
      rc = ltx_error_set(err, LTX_ERR_INDEX,
                         "index entry %zu at offset %llu (page %llu): the page block holds only "
                         "%zu frames",
                         k, (unsigned long long)at, (unsigned long long)v[0], d->n_seen);
      goto out;
    }
    if (v[0] != d->seen[k].pgno || v[1] != d->seen[k].offset || v[2] != d->seen[k].size) {
      rc = ltx_error_set(err, LTX_ERR_INDEX,
                         "index entry %zu at offset %llu says page %llu offset %llu size %llu, "
                         "the frame is page %u offset %llu size %u",
                         k, (unsigned long long)at, (unsigned long long)v[0],
                         (unsigned long long)v[1], (unsigned long long)v[2], d->seen[k].pgno,
                         (unsigned long long)d->seen[k].offset, d->seen[k].size);
      goto out;
    }
    k++;
  }
  if (k != d->n_seen) {
    rc = ltx_error_set(err, LTX_ERR_INDEX,
                       "index at offset %llu lists %zu pages, the page block holds %zu",
                       (unsigned long long)start, k, d->n_seen);
    goto out;
  }
  rc = fill(d, 8, err);
  if (rc == LTX_ERR_TRUNCATED) {
    rc = ltx_error_set(err, LTX_ERR_TRUNCATED, "input ends at offset %llu inside the index size",
                       (unsigned long long)offset_of(d));
  }
  if (rc != LTX_OK) goto out;
  isz = ltx_get_be64(d->in + d->pos);
  if (isz != offset_of(d) - start) {
    rc = ltx_error_set(err, LTX_ERR_INDEX,
                       "index size %llu at offset %llu, but the index at offset %llu has %llu bytes",
                       (unsigned long long)isz, (unsigned long long)offset_of(d),
                       (unsigned long long)start, (unsigned long long)(offset_of(d) - start));
    goto out;
  }
  d->pos += 8;
  if (d->crc_live) d->crc = ltx_crc64(d->crc, d->in + d->crc_from, d->pos - d->crc_from);
out:
  d->crc_live = 0;
  return rc;
}

/* After the trailer: any byte left, buffered or still to come, is an error. */
static int require_end(ltx_decoder *d, ltx_error *err) {
  int rc = LTX_OK;
  uint64_t end = offset_of(d);
  size_t extra = d->len - d->pos;
  if (extra == 0 && d->read != NULL && !d->eof) {
    d->base += d->len;
    d->pos = d->len = 0;
    rc = d->read(d->ctx, d->own, d->cap, &extra, err);
    if (rc != LTX_OK) goto out;
    if (extra == 0) d->eof = 1;
  }
  if (extra > 0) {
    rc = ltx_error_set(err, LTX_ERR_TRAILING,
                       "%s%zu bytes after the trailer, which ends at offset %llu",
                       d->read != NULL ? "at least " : "", extra, (unsigned long long)end);
    goto out;
  }
out:
  return rc;
}

int ltx_decoder_finish(ltx_decoder *d, ltx_trailer *trailer, ltx_index *idx, ltx_error *err) {
  int rc = LTX_OK;
  ltx_trailer t;
  uint64_t at;

  if (idx != NULL) {
    idx->entries = NULL;
    idx->n = 0;
  }
  if (d->state == ST_FAILED) {
    rc = ltx_error_set(err, d->fail_code, "decoder stopped by an earlier error");
    goto out;
  }
  if (d->state != ST_INDEX) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "ltx_decoder_finish %s",
                       d->state == ST_DONE ? "called twice" : "before the page block has ended");
    goto out;
  }
  rc = finish_index(d, err);
  if (rc != LTX_OK) goto out;
  at = offset_of(d);
  rc = fill(d, LTX_TRAILER_SIZE, err);
  if (rc == LTX_ERR_TRUNCATED) {
    rc = ltx_error_set(err, LTX_ERR_TRUNCATED, "input ends inside the trailer at offset %llu",
                       (unsigned long long)at);
  }
  if (rc != LTX_OK) goto out;
  t.post_apply_checksum = ltx_get_be64(d->in + d->pos);
  t.file_checksum = ltx_get_be64(d->in + d->pos + 8);
  if (d->verify) d->crc = ltx_crc64(d->crc, d->in + d->pos, 8);
  d->pos += LTX_TRAILER_SIZE;
  rc = require_end(d, err);
  if (rc != LTX_OK) goto out;

  if (d->verify && t.file_checksum != (LTX_CHECKSUM_FLAG | d->crc)) {
    rc = ltx_error_set(err, LTX_ERR_FILE_CHECKSUM,
                       "file checksum %016llx at offset %llu, the content gives %016llx",
                       (unsigned long long)t.file_checksum, (unsigned long long)(at + 8),
                       (unsigned long long)(LTX_CHECKSUM_FLAG | d->crc));
    goto out;
  }
  if (d->hdr.flags & LTX_HEADER_FLAG_NO_CHECKSUM) {
    if (t.post_apply_checksum != 0) {
      rc = ltx_error_set(err, LTX_ERR_DB_CHECKSUM,
                         "post-apply checksum %016llx at offset %llu in a NoChecksum file: must be 0",
                         (unsigned long long)t.post_apply_checksum, (unsigned long long)at);
      goto out;
    }
  } else if ((t.post_apply_checksum & LTX_CHECKSUM_FLAG) == 0) {
    rc = ltx_error_set(err, LTX_ERR_DB_CHECKSUM,
                       "post-apply checksum %016llx at offset %llu: bit 63 must be set",
                       (unsigned long long)t.post_apply_checksum, (unsigned long long)at);
    goto out;
  }
  if (d->track_db && t.post_apply_checksum != d->db) {
    rc = ltx_error_set(err, LTX_ERR_DB_CHECKSUM,
                       "snapshot post-apply checksum %016llx at offset %llu, its pages give %016llx",
                       (unsigned long long)t.post_apply_checksum, (unsigned long long)at,
                       (unsigned long long)d->db);
    goto out;
  }
  d->state = ST_DONE;
  if (trailer != NULL) *trailer = t;
  if (idx != NULL) {
    idx->entries = d->seen;
    idx->n = d->n_seen;
    d->seen = NULL;
    d->n_seen = d->cap_seen = 0;
  }
out:
  /* Misuse leaves the decoder as it was; anything else ends it. */
  if (rc != LTX_OK && rc != LTX_ERR_ARG) {
    d->state = ST_FAILED;
    d->fail_code = rc;
  }
  return rc;
}

int ltx_decoder_open(ltx_decoder **out, ltx_read_fn read, void *ctx, ltx_error *err) {
  int rc = LTX_OK;
  ltx_decoder *d = NULL;
  size_t cap;
  uint8_t *grown;

  *out = NULL;
  if (read == NULL) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "ltx_decoder_open without a read callback");
    goto out;
  }
  d = calloc(1, sizeof(*d));
  if (d == NULL || (d->own = malloc(HEADER_BUFFER)) == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "LTX decoder");
    goto out;
  }
  d->read = read;
  d->ctx = ctx;
  d->in = d->own;
  d->cap = HEADER_BUFFER;
  rc = decoder_start(d, err);
  if (rc != LTX_OK) goto out;
  /* Now that the page size is known: room for the largest frame. */
  cap = ltx_frame_max_size(d->hdr.page_size) + STREAM_SLACK;
  grown = realloc(d->own, cap);
  if (grown == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "read buffer of %zu bytes", cap);
    goto out;
  }
  d->own = grown;
  d->in = grown;
  d->cap = cap;
  *out = d;
  d = NULL;
out:
  ltx_decoder_free(d);
  return rc;
}

const ltx_header *ltx_decoder_header(const ltx_decoder *d) { return &d->hdr; }

void ltx_decoder_set_verify_checksum(ltx_decoder *d, int verify_checksum) {
  if (d->state == ST_PAGES && d->n_seen == 0) {
    d->verify = verify_checksum != 0;
    d->track_db = d->verify && d->snapshot && !(d->hdr.flags & LTX_HEADER_FLAG_NO_CHECKSUM);
  }
}

uint64_t ltx_decoder_offset(const ltx_decoder *d) { return offset_of(d); }

/* Frees what the engine allocated, not the decoder itself. */
static void decoder_release(ltx_decoder *d) {
  free(d->own);
  free(d->seen);
  if (d->dctx != NULL) LZ4F_freeDecompressionContext(d->dctx);
}

void ltx_decoder_free(ltx_decoder *d) {
  if (d != NULL) {
    decoder_release(d);
    free(d);
  }
}

int ltx_verify_buffer(const uint8_t *buf, size_t n, ltx_header *h, ltx_trailer *trailer,
                      ltx_error *err) {
  int rc;
  ltx_decoder d;
  uint8_t *page = NULL;
  uint32_t pgno;

  memset(&d, 0, sizeof(d));
  d.in = buf;
  d.len = d.cap = n;
  rc = decoder_start(&d, err);
  if (rc != LTX_OK) goto out;
  page = malloc(d.hdr.page_size);
  if (page == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "page of %u bytes", d.hdr.page_size);
    goto out;
  }
  while ((rc = ltx_decoder_next(&d, &pgno, page, err)) == LTX_OK) continue;
  if (rc != LTX_DONE) goto out;
  rc = ltx_decoder_finish(&d, trailer, NULL, err);
  if (rc != LTX_OK) goto out;
  if (h != NULL) *h = d.hdr;
out:
  free(page);
  decoder_release(&d);
  return rc;
}
