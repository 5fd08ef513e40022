/*
** ltx_compact_files: merges LTX files into one with the compactor of ltx/
** (ltx_compact), as Litestream's compaction of L0 files into an L1 (or
** higher) file does. Used by tests/vfs_shell.sh to stage compactions and
** snapshots in a replica that a live connection is polling.
**
**   ltx_compact_files OUT IN...
**
** IN files are given oldest first and must follow each other (overlap is
** allowed, a gap is an error). OUT is written through OUT.tmp and rename(2),
** so a poller never sees half a file, and gets the mtime of the merged
** header timestamp, as Litestream's file backend does. Prints the output
** header's TXID range and commit; errors go to stderr, exit status 1.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf, pread, utimensat; the build passes -D_GNU_SOURCE */
#endif
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ltx/ltx.h"

typedef struct input {
  const char *path;
  int fd;
} input;

static int read_at(void *ctx, uint64_t off, uint8_t *buf, size_t n, ltx_error *err) {
  input *in = ctx;
  while (n > 0) {
    ssize_t r = pread(in->fd, buf, n, (off_t)off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ltx_error_set(err, LTX_ERR_IO, "%s: %s", in->path, strerror(errno));
    if (r == 0)
      return ltx_error_set(err, LTX_ERR_TRUNCATED, "%s: unexpected end of file at %" PRIu64,
                           in->path, off);
    buf += r;
    n -= (size_t)r;
    off += (uint64_t)r;
  }
  return LTX_OK;
}

static int write_out(void *ctx, const uint8_t *buf, size_t n, ltx_error *err) {
  FILE *f = ctx;
  if (n && fwrite(buf, 1, n, f) != n)
    return ltx_error_set(err, LTX_ERR_IO, "write: %s", strerror(errno));
  return LTX_OK;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s OUT IN...\n", argv[0]);
    return 2;
  }
  const char *out_path = argv[1];
  size_t n = (size_t)argc - 2;
  input *ins = calloc(n, sizeof *ins);
  ltx_source *srcs = calloc(n, sizeof *srcs);
  char *tmp_path = NULL;
  FILE *out = NULL;
  ltx_error err = {0};
  ltx_header h = {0};
  int rc = 1;

  if (!ins || !srcs) {
    fprintf(stderr, "ltx_compact_files: out of memory\n");
    goto done;
  }
  for (size_t i = 0; i < n; i++) ins[i].fd = -1;
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    ins[i].path = argv[i + 2];
    ins[i].fd = open(ins[i].path, O_RDONLY | O_CLOEXEC);
    if (ins[i].fd < 0 || fstat(ins[i].fd, &st) != 0) {
      fprintf(stderr, "ltx_compact_files: %s: %s\n", ins[i].path, strerror(errno));
      goto done;
    }
    srcs[i].read_at = read_at;
    srcs[i].ctx = &ins[i];
    srcs[i].size = (uint64_t)st.st_size;
  }
  if (asprintf(&tmp_path, "%s.tmp", out_path) < 0) {
    tmp_path = NULL;
    fprintf(stderr, "ltx_compact_files: out of memory\n");
    goto done;
  }
  out = fopen(tmp_path, "wb");
  if (!out) {
    fprintf(stderr, "ltx_compact_files: %s: %s\n", tmp_path, strerror(errno));
    goto done;
  }
  if (ltx_compact(srcs, n, write_out, out, &h, &err) != LTX_OK) {
    fprintf(stderr, "ltx_compact_files: %s (%s)\n", err.msg, ltx_err_name(err.code));
    goto done;
  }
  if (fflush(out) != 0 || fsync(fileno(out)) != 0) {
    fprintf(stderr, "ltx_compact_files: %s: %s\n", tmp_path, strerror(errno));
    goto done;
  }
  fclose(out);
  out = NULL;
  struct timespec ts[2];
  ts[0].tv_sec = ts[1].tv_sec = (time_t)(h.timestamp_ms / 1000);
  ts[0].tv_nsec = ts[1].tv_nsec = (long)(h.timestamp_ms % 1000) * 1000000L;
  if (utimensat(AT_FDCWD, tmp_path, ts, 0) != 0 || rename(tmp_path, out_path) != 0) {
    fprintf(stderr, "ltx_compact_files: %s: %s\n", out_path, strerror(errno));
    goto done;
  }
  printf("%s: TXID %016" PRIx64 "-%016" PRIx64 ", commit %" PRIu32 "\n", out_path, h.min_txid,
         h.max_txid, h.commit);
  rc = 0;

done:
  if (out) fclose(out);
  if (rc != 0 && tmp_path) unlink(tmp_path);
  free(tmp_path);
  if (ins)
    for (size_t i = 0; i < n; i++)
      if (ins[i].fd >= 0) close(ins[i].fd);
  free(ins);
  free(srcs);
  return rc;
}
