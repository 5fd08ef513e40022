/*
** walscan.c: reading committed transactions out of a SQLite WAL file.
**
** The primary never copies pages as SQLite writes them: in WAL mode the WAL
** already holds every commit durably (as durably as `synchronous` made it)
** until a checkpoint copies it into the database and a restart overwrites
** it. So the capture is a scan of the WAL from the last frame captured,
** with SQLite's own recovery rules (https://sqlite.org/fileformat2.html#walformat):
**
**   (1) a frame belongs to this WAL when its salts equal the header's;
**   (2) its checksum chains from the previous frame's (the header's for the
**       first) over the first 8 bytes of its header and the page, in the
**       byte order the magic names;
**   (3) a frame whose "database size after commit" is non-zero is a commit
**       frame; frames after the last valid commit frame are a transaction in
**       progress (or a rolled-back one) and are not taken.
**
** So what the scan returns is exactly what a recovering SQLite would call
** committed: a transaction being written concurrently by another connection
** ends the scan at its first frame that is not complete yet. The caller
** holds the spool lock, which a WAL restart also takes (primary.c), so the
** frames scanned cannot be overwritten under the scan.
*/
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "primary/primary_int.h"

#define WAL_MAGIC_LE 0x377f0682u
#define WAL_MAGIC_BE 0x377f0683u

static uint32_t get_be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* SQLite's walChecksumBytes: n is a multiple of 8. */
static void wal_checksum(int big_endian, const uint8_t *a, size_t n, uint32_t s[2]) {
  uint32_t s1 = s[0], s2 = s[1];
  for (size_t i = 0; i < n; i += 8) {
    uint32_t x0, x1;
    if (big_endian) {
      x0 = get_be32(a + i);
      x1 = get_be32(a + i + 4);
    } else {
      x0 = (uint32_t)a[i] | ((uint32_t)a[i + 1] << 8) | ((uint32_t)a[i + 2] << 16) |
           ((uint32_t)a[i + 3] << 24);
      x1 = (uint32_t)a[i + 4] | ((uint32_t)a[i + 5] << 8) | ((uint32_t)a[i + 6] << 16) |
           ((uint32_t)a[i + 7] << 24);
    }
    s1 += x0 + s2;
    s2 += x1 + s1;
  }
  s[0] = s1;
  s[1] = s2;
}

int wal_read_header(int fd, wal_header *out, ltx_error *err) {
  uint8_t h[WAL_HEADER_SIZE];
  ssize_t got = pread(fd, h, sizeof h, 0);
  uint32_t magic, s[2] = {0, 0};
  memset(out, 0, sizeof *out);
  if (got < 0) return ltx_error_set(err, PRIMARY_ERR_IO, "read the WAL header: %s", strerror(errno));
  if (got < (ssize_t)sizeof h) return LTX_DONE; /* empty or being created: no frames */
  magic = get_be32(h);
  if (magic != WAL_MAGIC_LE && magic != WAL_MAGIC_BE) return LTX_DONE;
  out->big_endian = magic == WAL_MAGIC_BE;
  out->page_size = get_be32(h + 8);
  out->salt1 = get_be32(h + 16);
  out->salt2 = get_be32(h + 20);
  wal_checksum(out->big_endian, h, 24, s);
  if (s[0] != get_be32(h + 24) || s[1] != get_be32(h + 28)) return LTX_DONE; /* torn header */
  if (out->page_size < 512 || out->page_size > 65536 || (out->page_size & (out->page_size - 1)))
    return LTX_DONE;
  out->cksum[0] = s[0];
  out->cksum[1] = s[1];
  return LTX_OK;
}

static int push_commit(wal_scan *sc, uint32_t frame, uint32_t db_pages) {
  if (sc->n_commits == sc->cap_commits) {
    size_t cap = sc->cap_commits ? sc->cap_commits * 2 : 16;
    wal_commit *c = realloc(sc->commits, cap * sizeof *c);
    if (c == NULL) return LTX_ERR_NOMEM;
    sc->commits = c;
    sc->cap_commits = cap;
  }
  sc->commits[sc->n_commits].frame = frame;
  sc->commits[sc->n_commits].db_pages = db_pages;
  sc->n_commits++;
  return LTX_OK;
}

static int push_frame(wal_scan *sc, uint32_t pgno) {
  if (sc->n_frames == sc->cap_frames) {
    size_t cap = sc->cap_frames ? sc->cap_frames * 2 : 256;
    uint32_t *f = realloc(sc->pgnos, cap * sizeof *f);
    if (f == NULL) return LTX_ERR_NOMEM;
    sc->pgnos = f;
    sc->cap_frames = cap;
  }
  sc->pgnos[sc->n_frames++] = pgno;
  return LTX_OK;
}

int wal_scan_from(int fd, const wal_header *wh, uint32_t from_frame, wal_scan *sc,
                  ltx_error *err) {
  const uint32_t ps = wh->page_size;
  const size_t fsz = WAL_FRAME_HEADER_SIZE + ps;
  uint8_t *buf = NULL;
  uint32_t s[2] = {wh->cksum[0], wh->cksum[1]};
  uint32_t frame = from_frame;
  size_t kept_frames = 0;
  int rc = LTX_OK;

  memset(sc, 0, sizeof *sc);
  sc->from_frame = from_frame;
  buf = malloc(fsz);
  if (buf == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  if (from_frame > 0) {
    /* The chain continues from the checksum the last captured frame stored. */
    off_t at = WAL_HEADER_SIZE + (off_t)(from_frame - 1) * (off_t)fsz;
    ssize_t got = pread(fd, buf, WAL_FRAME_HEADER_SIZE, at);
    if (got != WAL_FRAME_HEADER_SIZE || get_be32(buf + 8) != wh->salt1 ||
        get_be32(buf + 12) != wh->salt2) {
      rc = ltx_error_set(err, PRIMARY_ERR_WAL,
                         "WAL frame %u, the last one captured, is no longer in the WAL", from_frame);
      goto out;
    }
    s[0] = get_be32(buf + 16);
    s[1] = get_be32(buf + 20);
  }
  for (;;) {
    off_t at = WAL_HEADER_SIZE + (off_t)frame * (off_t)fsz;
    ssize_t got = pread(fd, buf, fsz, at);
    uint32_t pgno, commit, t[2];
    if (got < 0) {
      rc = ltx_error_set(err, PRIMARY_ERR_IO, "read WAL frame %u: %s", frame + 1, strerror(errno));
      goto out;
    }
    if ((size_t)got < fsz) break;                                              /* end */
    if (get_be32(buf + 8) != wh->salt1 || get_be32(buf + 12) != wh->salt2) break; /* (1) */
    t[0] = s[0];
    t[1] = s[1];
    wal_checksum(wh->big_endian, buf, 8, t);
    wal_checksum(wh->big_endian, buf + WAL_FRAME_HEADER_SIZE, ps, t);
    if (t[0] != get_be32(buf + 16) || t[1] != get_be32(buf + 20)) break;     /* (2) */
    s[0] = t[0];
    s[1] = t[1];
    pgno = get_be32(buf);
    commit = get_be32(buf + 4);
    frame++;
    if (pgno == 0) break;
    if (push_frame(sc, pgno) != LTX_OK) {
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
      goto out;
    }
    if (commit != 0) { /* (3) */
      if (push_commit(sc, frame, commit) != LTX_OK) {
        rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
        goto out;
      }
      kept_frames = sc->n_frames;
      sc->last_cksum[0] = s[0];
      sc->last_cksum[1] = s[1];
    }
  }
  sc->n_frames = kept_frames; /* a transaction in progress is not taken */
out:
  free(buf);
  if (rc != LTX_OK) wal_scan_free(sc);
  return rc;
}

void wal_scan_free(wal_scan *sc) {
  free(sc->pgnos);
  free(sc->commits);
  memset(sc, 0, sizeof *sc);
}

off_t wal_frame_page_offset(const wal_header *wh, uint32_t frame) {
  return WAL_HEADER_SIZE + (off_t)(frame - 1) * (off_t)(WAL_FRAME_HEADER_SIZE + wh->page_size) +
         WAL_FRAME_HEADER_SIZE;
}
