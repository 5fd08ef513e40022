/*
** header.c: the 100-byte LTX header and the file name of an LTX file.
**
** Layout and rules are docs/ltx-format.md, "Header". The rules a reader
** enforces, in the order they are checked:
**
**   magic      "LTX1"                                   LTX_ERR_MAGIC
**   flags      no bit but 0x2 (NoChecksum)              LTX_ERR_FLAGS
**   page size  power of two in 512..65536               LTX_ERR_PAGE_SIZE
**   TXIDs      min != 0, max >= min                     LTX_ERR_TXID
**   pre-apply  (1) snapshot (min TXID 1): 0             LTX_ERR_HEADER
**              (2) NoChecksum: 0
**              (3) otherwise: bit 63 set
**
** Rule (1) comes first because a snapshot has no "before" state whose
** checksum it could carry, checksummed or not; this is also what the Go
** library (ltx.Header.Validate) does. The WAL fields, node id and the
** reserved bytes are informational and not checked on read; the reserved
** bytes are written as zero. The encoder applies Litestream's extra WAL-field
** rules on top (see encoder.c), since Litestream rejects files that break
** them.
*/
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "ltx/ltx_int.h"

int ltx_header_validate(const ltx_header *h, ltx_error *err) {
  int rc = LTX_OK;
  uint32_t ps = h->page_size;

  if (h->flags & ~LTX_HEADER_FLAG_NO_CHECKSUM) {
    rc = ltx_error_set(err, LTX_ERR_FLAGS,
                       "header flags 0x%08x: only 0x2 (NoChecksum) is defined", h->flags);
    goto out;
  }
  if (ps < LTX_MIN_PAGE_SIZE || ps > LTX_MAX_PAGE_SIZE || (ps & (ps - 1)) != 0) {
    rc = ltx_error_set(err, LTX_ERR_PAGE_SIZE,
                       "header page size %u: must be a power of two in 512..65536", ps);
    goto out;
  }
  if (h->min_txid == 0) {
    rc = ltx_error_set(err, LTX_ERR_TXID, "header min TXID is 0");
    goto out;
  }
  if (h->max_txid < h->min_txid) {
    rc = ltx_error_set(err, LTX_ERR_TXID, "header max TXID %016llx below min TXID %016llx",
                       (unsigned long long)h->max_txid, (unsigned long long)h->min_txid);
    goto out;
  }
  if (ltx_header_is_snapshot(h)) {
    if (h->pre_apply_checksum != 0) { /* (1) */
      rc = ltx_error_set(err, LTX_ERR_HEADER,
                         "header pre-apply checksum %016llx on a snapshot: must be 0",
                         (unsigned long long)h->pre_apply_checksum);
      goto out;
    }
  } else if (h->flags & LTX_HEADER_FLAG_NO_CHECKSUM) {
    if (h->pre_apply_checksum != 0) { /* (2) */
      rc = ltx_error_set(err, LTX_ERR_HEADER,
                         "header pre-apply checksum %016llx with NoChecksum flag: must be 0",
                         (unsigned long long)h->pre_apply_checksum);
      goto out;
    }
  } else if ((h->pre_apply_checksum & LTX_CHECKSUM_FLAG) == 0) { /* (3) */
    rc = ltx_error_set(err, LTX_ERR_HEADER,
                       "header pre-apply checksum %016llx of a checksummed incremental file: "
                       "bit 63 must be set",
                       (unsigned long long)h->pre_apply_checksum);
    goto out;
  }
out:
  return rc;
}

int ltx_header_decode(const uint8_t buf[LTX_HEADER_SIZE], ltx_header *h, ltx_error *err) {
  int rc = LTX_OK;
  if (memcmp(buf, LTX_MAGIC, 4) != 0) {
    rc = ltx_error_set(err, LTX_ERR_MAGIC, "bad magic %02x %02x %02x %02x at offset 0: not an LTX file",
                       buf[0], buf[1], buf[2], buf[3]);
    goto out;
  }
  h->flags = ltx_get_be32(buf + 4);
  h->page_size = ltx_get_be32(buf + 8);
  h->commit = ltx_get_be32(buf + 12);
  h->min_txid = ltx_get_be64(buf + 16);
  h->max_txid = ltx_get_be64(buf + 24);
  h->timestamp_ms = (int64_t)ltx_get_be64(buf + 32);
  h->pre_apply_checksum = ltx_get_be64(buf + 40);
  h->wal_offset = ltx_get_be64(buf + 48);
  h->wal_size = ltx_get_be64(buf + 56);
  h->wal_salt1 = ltx_get_be32(buf + 64);
  h->wal_salt2 = ltx_get_be32(buf + 68);
  h->node_id = ltx_get_be64(buf + 72);
  rc = ltx_header_validate(h, err);
out:
  return rc;
}

void ltx_header_encode(const ltx_header *h, uint8_t buf[LTX_HEADER_SIZE]) {
  memcpy(buf, LTX_MAGIC, 4);
  ltx_put_be32(buf + 4, h->flags);
  ltx_put_be32(buf + 8, h->page_size);
  ltx_put_be32(buf + 12, h->commit);
  ltx_put_be64(buf + 16, h->min_txid);
  ltx_put_be64(buf + 24, h->max_txid);
  ltx_put_be64(buf + 32, (uint64_t)h->timestamp_ms);
  ltx_put_be64(buf + 40, h->pre_apply_checksum);
  ltx_put_be64(buf + 48, h->wal_offset);
  ltx_put_be64(buf + 56, h->wal_size);
  ltx_put_be32(buf + 64, h->wal_salt1);
  ltx_put_be32(buf + 68, h->wal_salt2);
  ltx_put_be64(buf + 72, h->node_id);
  memset(buf + 80, 0, LTX_HEADER_SIZE - 80);
}

char *ltx_file_name(uint64_t min_txid, uint64_t max_txid, char *buf) {
  snprintf(buf, 38, "%016llx-%016llx.ltx", (unsigned long long)min_txid,
           (unsigned long long)max_txid);
  return buf;
}

int ltx_txid_parse(const char *s, uint64_t *out) {
  uint64_t v = 0;
  size_t n = 0;
  if (s == NULL) return -1;
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s += 2;
  for (; s[n]; n++) {
    char c = s[n];
    unsigned d;
    if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
    else return -1;
    if (n == 16) return -1;
    v = v << 4 | d;
  }
  if (n == 0 || v == 0) return -1;
  *out = v;
  return 0;
}

/* 16 lowercase hex digits, as Litestream's filename regexp demands. */
static int parse_hex16(const char *s, uint64_t *v) {
  int rc = -1;
  uint64_t x = 0;
  for (int i = 0; i < 16; i++) {
    char c = s[i];
    unsigned d;
    if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
    else goto out;
    x = x << 4 | d;
  }
  *v = x;
  rc = 0;
out:
  return rc;
}

int ltx_file_name_parse(const char *name, uint64_t *min_txid, uint64_t *max_txid) {
  int rc = -1;
  uint64_t lo, hi;
  if (strlen(name) != 37 || name[16] != '-' || strcmp(name + 33, ".ltx") != 0) goto out;
  if (parse_hex16(name, &lo) != 0 || parse_hex16(name + 17, &hi) != 0) goto out;
  if (min_txid) *min_txid = lo;
  if (max_txid) *max_txid = hi;
  rc = 0;
out:
  return rc;
}
