/*
** index.c: the page index, read from the tail of a file.
**
** docs/ltx-format.md, "Page index": after the terminator, one entry per page
** (LEB128 varints pgno, offset, size), a 0x00, then a big-endian u64 with the
** byte length of the entries including the 0x00, then the 16-byte trailer:
**
**   ... frames | 6 x 00 | entries | 00 | isz (8) | post (8) | file cksum (8) |
**                       ^ file_size - 24 - isz                  file_size ^
**
** A reader that wants one page fetches the last few KiB of the file (one
** suffix range request), parses the index here, and then fetches exactly
** the frame it needs. Because the index is all a random-access reader trusts,
** it is checked hard: the entries must describe the page block exactly,
** frame after frame from offset 100 up to the terminator, with strictly
** ascending page numbers. A Litestream file always has that shape; anything
** else is corruption and gives LTX_ERR_INDEX with the offending entry.
**
** Allocation is bounded by the bytes actually present: the entries are
** counted before the array is allocated, and isz is checked against the
** file size before the tail is trusted.
*/
#include "config.h"

#include <stdlib.h>

#include "ltx/ltx_int.h"

/* isz (8) + trailer (16): the fixed part at the end of every file. */
#define TAIL_FIXED (8 + LTX_TRAILER_SIZE)
/* Header, terminator, the 0x00 of an empty index, isz, trailer. */
#define MIN_FILE_SIZE (LTX_HEADER_SIZE + LTX_TERMINATOR_SIZE + 1 + TAIL_FIXED)
/* The smallest frame: header, csize, a one-byte LZ4 block. */
#define MIN_FRAME_SIZE (LTX_FRAME_HEADER_SIZE + LTX_FRAME_CSIZE_SIZE + 1)

enum { VARINT_OK = 0, VARINT_OVERFLOW = 1, VARINT_SHORT = 2 };

/* Go's binary.Uvarint: at most 10 bytes, the 10th at most 1. */
static int get_uvarint(const uint8_t **pp, const uint8_t *end, uint64_t *v) {
  int rc = VARINT_SHORT;
  const uint8_t *p = *pp;
  uint64_t x = 0;
  for (unsigned shift = 0; p < end; shift += 7) {
    uint8_t b = *p++;
    if (shift == 63 && b > 1) {
      rc = VARINT_OVERFLOW;
      goto out;
    }
    x |= (uint64_t)(b & 0x7f) << shift;
    if (b < 0x80) {
      *v = x;
      *pp = p;
      rc = VARINT_OK;
      goto out;
    }
  }
out:
  return rc;
}

int ltx_index_parse_tail(const uint8_t *tail, size_t n_tail, uint64_t file_size, ltx_index *idx,
                         size_t *need, ltx_error *err) {
  int rc = LTX_OK;
  ltx_page_entry *entries = NULL;
  size_t n = 0, cap = 0;
  uint64_t isz, idx_off, block_end, expect_off = LTX_HEADER_SIZE, prev_pgno = 0;
  const uint8_t *p, *end;

  idx->entries = NULL;
  idx->n = 0;
  if (need) *need = 0;
  if (n_tail > file_size) {
    rc = ltx_error_set(err, LTX_ERR_ARG, "tail of %zu bytes is longer than the file (%llu)",
                       n_tail, (unsigned long long)file_size);
    goto out;
  }
  if (file_size < MIN_FILE_SIZE) {
    rc = ltx_error_set(err, LTX_ERR_TRUNCATED,
                       "file of %llu bytes is shorter than the smallest LTX file (%d bytes)",
                       (unsigned long long)file_size, MIN_FILE_SIZE);
    goto out;
  }
  if (n_tail < TAIL_FIXED) {
    if (need) *need = TAIL_FIXED;
    rc = ltx_error_set(err, LTX_ERR_TRUNCATED,
                       "tail of %zu bytes does not reach the index size at offset %llu", n_tail,
                       (unsigned long long)(file_size - TAIL_FIXED));
    goto out;
  }
  isz = ltx_get_be64(tail + n_tail - TAIL_FIXED);
  /* Catch a hostile isz before any arithmetic with it: the index must leave
  ** room for the header and the terminator. */
  if (isz == 0 || isz > file_size - MIN_FILE_SIZE + 1) {
    rc = ltx_error_set(err, LTX_ERR_INDEX,
                       "index size %llu at offset %llu does not fit in a file of %llu bytes",
                       (unsigned long long)isz, (unsigned long long)(file_size - TAIL_FIXED),
                       (unsigned long long)file_size);
    goto out;
  }
  if (n_tail < TAIL_FIXED + isz) {
    if (need) *need = (size_t)(TAIL_FIXED + isz);
    rc = ltx_error_set(err, LTX_ERR_TRUNCATED,
                       "tail of %zu bytes does not hold the index (%llu bytes + %d)", n_tail,
                       (unsigned long long)isz, TAIL_FIXED);
    goto out;
  }
  idx_off = file_size - TAIL_FIXED - isz;
  block_end = idx_off - LTX_TERMINATOR_SIZE;
  p = tail + (n_tail - TAIL_FIXED - isz);
  end = p + isz;
  if (end[-1] != 0) {
    rc = ltx_error_set(err, LTX_ERR_INDEX, "index at offset %llu (%llu bytes) does not end with 0x00",
                       (unsigned long long)idx_off, (unsigned long long)isz);
    goto out;
  }
  /* Every varint ends in a byte below 0x80 and an entry has three, so this
  ** bounds the entry count by the bytes present. */
  for (const uint8_t *q = p; q < end; q++) cap += *q < 0x80;
  cap /= 3;
  if (cap > 0) {
    entries = malloc(cap * sizeof(*entries));
    if (entries == NULL) {
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "page index of %zu entries", cap);
      goto out;
    }
  }
  for (;;) {
    uint64_t pgno, off, size;
    uint64_t at = idx_off + (uint64_t)(p - (end - isz));
    int vr = get_uvarint(&p, end, &pgno);
    if (vr == VARINT_OK && pgno != 0) {
      vr = get_uvarint(&p, end, &off);
      if (vr == VARINT_OK) vr = get_uvarint(&p, end, &size);
    }
    if (vr != VARINT_OK) {
      rc = ltx_error_set(err, LTX_ERR_INDEX, "index entry %zu at offset %llu: %s", n,
                         (unsigned long long)at,
                         vr == VARINT_OVERFLOW ? "varint overflows 64 bits"
                                               : "runs past the end of the index");
      goto out;
    }
    if (pgno == 0) break;
    if (n == cap) {
      rc = ltx_error_set(err, LTX_ERR_INDEX, "index entry %zu at offset %llu: more entries than bytes allow",
                         n, (unsigned long long)at);
      goto out;
    }
    if (pgno > UINT32_MAX || pgno <= prev_pgno) {
      rc = ltx_error_set(err, LTX_ERR_INDEX,
                         "index entry %zu at offset %llu: page %llu after page %llu, pages must "
                         "ascend and fit in 32 bits",
                         n, (unsigned long long)at, (unsigned long long)pgno,
                         (unsigned long long)prev_pgno);
      goto out;
    }
    /* (1) frames follow each other from the header on, (2) a frame has a
    ** plausible size, (3) it ends before the terminator. */
    if (off != expect_off || size < MIN_FRAME_SIZE || size > ltx_frame_max_size(LTX_MAX_PAGE_SIZE) ||
        size > block_end - off) {
      rc = ltx_error_set(err, LTX_ERR_INDEX,
                         "index entry %zu at offset %llu: page %llu at offset %llu size %llu, but "
                         "the frame must start at %llu and end by the terminator at %llu",
                         n, (unsigned long long)at, (unsigned long long)pgno,
                         (unsigned long long)off, (unsigned long long)size,
                         (unsigned long long)expect_off, (unsigned long long)block_end);
      goto out;
    }
    entries[n].pgno = (uint32_t)pgno;
    entries[n].offset = off;
    entries[n].size = (uint32_t)size;
    n++;
    prev_pgno = pgno;
    expect_off = off + size;
  }
  if (p != end) {
    rc = ltx_error_set(err, LTX_ERR_INDEX, "index at offset %llu: %zu bytes after the 0x00 end marker",
                       (unsigned long long)idx_off, (size_t)(end - p));
    goto out;
  }
  if (expect_off != block_end) {
    rc = ltx_error_set(err, LTX_ERR_INDEX,
                       "index at offset %llu: frames end at offset %llu, the terminator is at %llu",
                       (unsigned long long)idx_off, (unsigned long long)expect_off,
                       (unsigned long long)block_end);
    goto out;
  }
  idx->entries = entries;
  idx->n = n;
  entries = NULL;
out:
  free(entries);
  return rc;
}

void ltx_index_free(ltx_index *idx) {
  if (idx != NULL) {
    free(idx->entries);
    idx->entries = NULL;
    idx->n = 0;
  }
}

const ltx_page_entry *ltx_index_find(const ltx_index *idx, uint32_t pgno) {
  const ltx_page_entry *found = NULL;
  size_t lo = 0, hi = idx->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    uint32_t v = idx->entries[mid].pgno;
    if (v == pgno) {
      found = &idx->entries[mid];
      break;
    }
    if (v < pgno) lo = mid + 1;
    else hi = mid;
  }
  return found;
}
