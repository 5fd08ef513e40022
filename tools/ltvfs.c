/*
** ltvfs: the command-line tool around the ltvfs layers.
**
**   ltvfs ls URL                      levels, files and the TXIDs a restore can reach
**   ltvfs restore URL -o OUT [...]    the database at the latest or a pinned TXID
**   ltvfs import DB URL               seed a replica from a local SQLite database
**   ltvfs ltx dump FILE               header, trailer and page index of one LTX file
**   ltvfs ltx verify FILE...          full decode and checksum of LTX files
**
** Exit codes (also in `ltvfs --help` and README.md):
**   0 success
**   1 failure: I/O, unreachable or missing replica, bad URL
**   2 usage error
**   3 invalid data: a corrupt or malformed LTX file
**   4 not available: empty replica, a TXID or time no plan reaches
*/
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>


#include "cache/cache.h"
#include "ltx/ltx.h"
#include "store/store.h"
#include "vfs/vfs.h"

enum {
  EXIT_OK = 0,
  EXIT_FAIL = 1,
  EXIT_USAGE = 2,
  EXIT_INVALID = 3,
  EXIT_UNAVAILABLE = 4
};

static const char *g_prog = "ltvfs";

static const char usage_main[] =
    "usage: ltvfs COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  ls URL                     list a replica's levels, files and reachable TXIDs\n"
    "  restore URL -o OUT [opts]  write the database at the latest or a pinned TXID\n"
    "  import DB URL              seed a replica from a local SQLite database\n"
    "  ltx dump FILE              print an LTX file's header, trailer and page index\n"
    "  ltx verify FILE...         decode LTX files fully and check their checksums\n"
    "  hydrate URL [opts]         fill the local image (cache) of a replica\n"
    "\n"
    "URL is a Litestream v0.5 replica: file:///abs/dir, file://rel/dir or a plain\n"
    "directory (DIR/ltx/<level>/<min>-<max>.ltx), or\n"
    "s3://BUCKET/PATH[?endpoint=http://HOST:PORT&region=R&force-path-style=true]\n"
    "(PATH/<level %04x>/<min>-<max>.ltx; credentials from AWS_ACCESS_KEY_ID,\n"
    "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION).\n"
    "Run `ltvfs COMMAND --help` for a command's options. Warnings from background\n"
    "work (a store failing while hydrate fills) go to stderr as they happen;\n"
    "LITESTREAM_LOG_LEVEL=debug|info|warn|error sets how much.\n"
    "\n"
    "Exit codes: 0 success; 1 failure (I/O, missing replica, bad URL); 2 usage error;\n"
    "3 invalid data (corrupt LTX file); 4 not available (empty replica, TXID or time\n"
    "that no restore plan reaches).\n";

static const char usage_ls[] =
    "usage: ltvfs ls URL\n"
    "\n"
    "Lists every LTX file of the replica by level (TXID range, size, timestamp), then\n"
    "the latest TXID and the TXIDs a pinned restore can reach.\n";

static const char usage_restore[] =
    "usage: ltvfs restore URL -o OUT [--txid HEX | --timestamp RFC3339] [-f] [-q]\n"
    "\n"
    "Writes the replica's database to OUT, atomically (temporary file, fsync, rename).\n"
    "  -o, --output OUT       the database file to write (required)\n"
    "      --txid HEX         the state at exactly this TXID (hex, e.g. 1a2b)\n"
    "      --timestamp TS     the latest state of files written strictly before TS\n"
    "                         (RFC 3339, e.g. 2026-11-22T10:00:00Z)\n"
    "  -f, --force            replace OUT if it exists (default: refuse)\n"
    "  -q, --quiet            no progress bar (it is shown only on a terminal anyway)\n"
    "Every LTX file is fully verified (frames, index, file checksum) while it is\n"
    "applied; a corrupt file stops the restore and OUT is left untouched.\n";

static const char usage_import[] =
    "usage: ltvfs import DB URL\n"
    "\n"
    "Writes a consistent copy of the SQLite database DB into the replica at URL as a\n"
    "snapshot LTX file at the next TXID, in Litestream's layout: on an empty replica\n"
    "level 0, 0000000000000001-0000000000000001.ltx (what Litestream's first sync\n"
    "writes); on a replica that already holds TXID N, the level-9 snapshot [1, N+1].\n";

static const char usage_ltx_dump[] =
    "usage: ltvfs ltx dump FILE\n"
    "\n"
    "Prints the header fields, the trailer and one line per page (pgno, offset, size)\n"
    "from the page index. Does not decompress pages; use `ltx verify` for that.\n";

static const char usage_ltx_verify[] =
    "usage: ltvfs ltx verify FILE...\n"
    "\n"
    "Decodes every frame of each file (both frame kinds), checks the page index\n"
    "against the frames and verifies the file checksum. Prints one line per file and\n"
    "exits 0 only when every file is valid (3 otherwise).\n";

static const char usage_hydrate[] =
    "usage: ltvfs hydrate URL [--cache-dir DIR] [--cache-max SIZE] [--txid HEX]\n"
    "                         [--timeout SECONDS] [-q]\n"
    "\n"
    "Fills the local image of the replica at URL, the cache the litestream VFS\n"
    "reads from, so an application that opens it next serves every page from\n"
    "disk and can open while the store is down. DIR is the cache root; by\n"
    "default the one the VFS picks: LITESTREAM_CACHE_DIR (\"off\": an error, there\n"
    "is no cache to fill), else LITESTREAM_HYDRATION_PATH + \".ltvfs\", else\n"
    "$XDG_CACHE_HOME/ltvfs, else ~/.cache/ltvfs, else $TMPDIR/ltvfs-UID. Prints the\n"
    "image's directory and TXID when done; shows a progress bar on a terminal.\n"
    "Fails after SECONDS (default 3600), and at once when the database does not\n"
    "fit: the image never takes more than SIZE (bytes, or 512M, 10G; default\n"
    "LTVFS_CACHE_MAX, as for the VFS) nor the free space of DIR less a reserve.\n"
    "\n"
    "  --txid HEX   the image at exactly this TXID, for applications that open\n"
    "               ?txid=HEX: their pages are then read from disk (the open\n"
    "               still lists the replica and reads its indexes; with the\n"
    "               store down it opens from the image alone). An image\n"
    "               never moves back, so the cache must be empty or at HEX\n"
    "               already; a later open of the latest moves it forward.\n";

static int wants_help(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
  return 0;
}

static int usage_error(const char *usage, const char *fmt, const char *arg) {
  fprintf(stderr, "%s: ", g_prog);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n%s", usage);
  return EXIT_USAGE;
}

/* Maps an error code of any layer to the documented exit code. */
static int exit_code_for(int code) {
  switch (code) {
  case LTX_OK: return EXIT_OK;
  case STORE_ERR_EMPTY:
  case STORE_ERR_TXID_UNAVAILABLE:
  case STORE_ERR_NONCONTIGUOUS: return EXIT_UNAVAILABLE;
  default:
    if (store_error_is_corrupt(code)) return EXIT_INVALID;
    if (code == CACHE_ERR_PAGE_SIZE) return EXIT_INVALID;
    return EXIT_FAIL;
  }
}

static int report(const ltx_error *err) {
  fprintf(stderr, "%s: %s\n", g_prog, err->msg[0] ? err->msg : ltx_err_name(err->code));
  return exit_code_for(err->code);
}

/* The library's messages from its background threads (a store that fails
** while the hydrator fills, a disk that filled up) go to stderr, so that a
** long `ltvfs hydrate` does not wait in silence; warnings and errors by
** default, LITESTREAM_LOG_LEVEL (debug, info, warn, error) as for the VFS. */
static atomic_int g_log_level = REPLICA_LOG_WARN;

static void log_to_stderr(int level, const char *msg) {
  static const char *const kName[] = {"debug", "info", "warning", "error"};
  if (level < atomic_load(&g_log_level) || level < REPLICA_LOG_DEBUG || level > REPLICA_LOG_ERROR)
    return;
  fprintf(stderr, "%s: %s: %s\n", g_prog, kName[level], msg);
}

static void log_configure(void) {
  atomic_store(&g_log_level, vfs_log_level_env());
  replica_set_log(log_to_stderr);
}

static const char *human_size(uint64_t n, char *buf, size_t cap) {
  if (n < 10 * 1024) snprintf(buf, cap, "%" PRIu64 " B", n);
  else if (n < 10ull * 1024 * 1024) snprintf(buf, cap, "%.1f KiB", n / 1024.0);
  else if (n < 10ull * 1024 * 1024 * 1024) snprintf(buf, cap, "%.1f MiB", n / 1048576.0);
  else snprintf(buf, cap, "%.1f GiB", n / 1073741824.0);
  return buf;
}

/* ---- ls ---- */

static int cmd_ls(int argc, char **argv) {
  store *st = NULL;
  store_ltx_list all = {0};
  uint64_t *txids = NULL;
  size_t n_txids = 0;
  ltx_error err = {0};
  int rc, status = EXIT_OK;

  if (wants_help(argc, argv)) return fputs(usage_ls, stdout), EXIT_OK;
  if (argc != 2) return usage_error(usage_ls, "ls takes exactly one URL%s", "");

  rc = store_open(argv[1], &st, &err);
  if (rc) goto out;
  rc = store_list_all(st, &all, &err);
  if (rc) goto out;
  if (all.n == 0) {
    rc = ltx_error_set(&err, STORE_ERR_EMPTY, "%s holds no LTX files", argv[1]);
    goto out;
  }
  printf("%-5s  %-16s  %-16s  %10s  %s\n", "level", "min_txid", "max_txid", "size",
         "timestamp");
  for (size_t i = 0; i < all.n; i++) {
    const store_ltx_file *f = &all.files[i];
    char ts[40], sz[32];
    ltx_time_format(f->timestamp_ms, ts, sizeof ts);
    printf("%-5d  %016" PRIx64 "  %016" PRIx64 "  %10s  %s\n", f->level, f->min_txid,
           f->max_txid, human_size(f->size, sz, sizeof sz), ts);
  }
  {
    store_plan plan = {0};
    ltx_error plan_err = {0};
    if (store_plan_build(all.files, all.n, 0, -1, &plan, &plan_err) == LTX_OK) {
      printf("latest: %016" PRIx64 " (%zu file%s to restore)\n", plan.txid, plan.n,
             plan.n == 1 ? "" : "s");
    } else {
      printf("latest: unavailable: %s\n", plan_err.msg);
    }
    store_plan_free(&plan);
  }
  rc = store_plan_available_txids(all.files, all.n, &txids, &n_txids, &err);
  if (rc) goto out;
  printf("pinnable TXIDs (%zu):", n_txids);
  for (size_t i = 0; i < n_txids; i++) {
    /* A long history prints its ends; the middle adds nothing at a glance. */
    if (n_txids > 20 && i == 10) {
      printf(" ... (%zu more)", n_txids - 20);
      i = n_txids - 10;
    }
    printf(" %" PRIx64, txids[i]);
  }
  printf("\n");

out:
  if (rc) status = report(&err);
  free(txids);
  store_ltx_list_free(&all);
  store_close(st);
  return status;
}

/* ---- restore ---- */

typedef struct progress_bar {
  int enabled;
  int last_percent;
} progress_bar;

static void progress_draw(void *ctx, uint64_t done, uint64_t total) {
  progress_bar *bar = ctx;
  if (!bar->enabled || total == 0) return;
  int percent = (int)(done * 100 / total);
  if (percent == bar->last_percent) return;
  bar->last_percent = percent;
  char a[32], b[32];
  int width = 40, fill = percent * width / 100;
  fprintf(stderr, "\r[%.*s%*s] %3d%%  %s / %s", fill,
          "########################################", width - fill, "", percent,
          human_size(done, a, sizeof a), human_size(total, b, sizeof b));
  if (done >= total) fputc('\n', stderr);
  fflush(stderr);
}

static int cmd_restore(int argc, char **argv) {
  static const struct option opts[] = {
      {"output", required_argument, NULL, 'o'}, {"txid", required_argument, NULL, 't'},
      {"timestamp", required_argument, NULL, 'T'}, {"force", no_argument, NULL, 'f'},
      {"quiet", no_argument, NULL, 'q'},        {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  const char *out_path = NULL;
  uint64_t txid = 0;
  int64_t at_ms = -1;
  int force = 0, quiet = 0, c;
  store *st = NULL;
  store_ltx_list all = {0};
  store_plan plan = {0};
  ltx_error err = {0};
  progress_bar bar = {0, -1};
  int rc, status = EXIT_OK;
  struct stat sb;

  optind = 1;
  while ((c = getopt_long(argc, argv, "o:fqh", opts, NULL)) != -1) {
    switch (c) {
    case 'o': out_path = optarg; break;
    case 't':
      if (ltx_txid_parse(optarg, &txid))
        return usage_error(usage_restore, "--txid %s is not a non-zero hex TXID", optarg);
      break;
    case 'T':
      at_ms = ltx_time_parse(optarg);
      if (at_ms < 0)
        return usage_error(usage_restore, "--timestamp %s is not an RFC 3339 time", optarg);
      break;
    case 'f': force = 1; break;
    case 'q': quiet = 1; break;
    case 'h': return fputs(usage_restore, stdout), EXIT_OK;
    default: return usage_error(usage_restore, "bad option%s", "");
    }
  }
  if (optind != argc - 1) return usage_error(usage_restore, "restore takes one URL%s", "");
  if (!out_path) return usage_error(usage_restore, "restore needs -o OUT%s", "");
  if (txid && at_ms >= 0)
    return usage_error(usage_restore, "--txid and --timestamp exclude each other%s", "");
  if (!force && stat(out_path, &sb) == 0) {
    fprintf(stderr, "%s: %s already exists (use --force to replace it)\n", g_prog, out_path);
    return EXIT_FAIL;
  }
  bar.enabled = !quiet && isatty(STDERR_FILENO);

  rc = store_open(argv[optind], &st, &err);
  if (rc) goto out;
  rc = store_list_all(st, &all, &err);
  if (rc) goto out;
  rc = store_plan_build(all.files, all.n, txid, at_ms, &plan, &err);
  if (rc == STORE_ERR_EMPTY) ltx_error_prefix(&err, "%s", argv[optind]);
  if (rc) goto out;
  rc = cache_restore(st, &plan, out_path, force, progress_draw, &bar, &err);
  if (rc) goto out;
  if (!quiet)
    fprintf(stderr, "restored TXID %016" PRIx64 " from %zu file%s to %s\n", plan.txid, plan.n,
            plan.n == 1 ? "" : "s", out_path);

out:
  if (rc) status = report(&err);
  store_plan_free(&plan);
  store_ltx_list_free(&all);
  store_close(st);
  return status;
}

/* ---- import ---- */

/* Copies db_path into a private temporary file with SQLite's backup API, so
** the import sees one consistent state whatever the journal mode and whoever
** else writes the database. */
static int snapshot_copy(const char *db_path, char *tmp_path, ltx_error *err) {
  sqlite3 *src = NULL, *dst = NULL;
  sqlite3_backup *bk = NULL;
  int rc = LTX_OK, src_rc;
  int fd = mkstemp(tmp_path);
  if (fd < 0)
    return ltx_error_set(err, CACHE_ERR_IO, "create %s: %s", tmp_path, strerror(errno));
  close(fd);
  src_rc = sqlite3_open_v2(db_path, &src, SQLITE_OPEN_READONLY, NULL);
  if (src_rc == SQLITE_OK) src_rc = sqlite3_exec(src, "SELECT 1 FROM sqlite_master LIMIT 1",
                                                  NULL, NULL, NULL);
  if (src_rc != SQLITE_OK) {
    rc = ltx_error_set(err, CACHE_ERR_IO, "%s is not a readable SQLite database: %s", db_path,
                       src ? sqlite3_errmsg(src) : sqlite3_errstr(src_rc));
    goto out;
  }
  if (sqlite3_open(tmp_path, &dst) != SQLITE_OK) {
    rc = ltx_error_set(err, CACHE_ERR_IO, "open %s: %s", tmp_path, sqlite3_errmsg(dst));
    goto out;
  }
  bk = sqlite3_backup_init(dst, "main", src, "main");
  if (!bk) {
    rc = ltx_error_set(err, CACHE_ERR_IO, "backup of %s: %s", db_path, sqlite3_errmsg(dst));
    goto out;
  }
  src_rc = sqlite3_backup_step(bk, -1);
  if (src_rc != SQLITE_DONE) {
    rc = ltx_error_set(err, CACHE_ERR_IO, "backup of %s: %s", db_path, sqlite3_errstr(src_rc));
    goto out;
  }
out:
  if (bk) sqlite3_backup_finish(bk);
  sqlite3_close(dst);
  sqlite3_close(src);
  return rc;
}

static int cmd_import(int argc, char **argv) {
  store *st = NULL;
  store_ltx_list all = {0};
  ltx_error err = {0};
  ltx_header h;
  char db_tmp[] = "/tmp/ltvfs-import-XXXXXX", ltx_tmp[] = "/tmp/ltvfs-import-ltx-XXXXXX";
  char key[128];
  int have_db_tmp = 0, db_fd = -1, ltx_fd = -1, level = 0;
  int rc, status = EXIT_OK;
  uint64_t txid = 1, size = 0;
  struct timespec now;

  if (wants_help(argc, argv)) return fputs(usage_import, stdout), EXIT_OK;
  if (argc != 3) return usage_error(usage_import, "import takes DB and URL%s", "");

  rc = store_open(argv[2], &st, &err);
  if (rc) goto out;
  rc = store_list_all(st, &all, &err);
  if (rc && err.code != STORE_ERR_NOT_FOUND) goto out;
  rc = LTX_OK;
  for (size_t i = 0; i < all.n; i++)
    if (all.files[i].max_txid >= txid) txid = all.files[i].max_txid + 1;
  if (txid > 1) level = STORE_SNAPSHOT_LEVEL;

  /* A consistent copy, encoded into a temporary file, uploaded from it:
  ** memory stays bounded whatever the database's size. */
  rc = snapshot_copy(argv[1], db_tmp, &err);
  have_db_tmp = 1;
  if (rc) goto out;
  db_fd = open(db_tmp, O_RDONLY | O_CLOEXEC);
  ltx_fd = mkstemp(ltx_tmp);
  if (db_fd < 0 || ltx_fd < 0) {
    rc = ltx_error_set(&err, CACHE_ERR_IO, "open a temporary file: %s", strerror(errno));
    goto out;
  }
  unlink(ltx_tmp); /* gone with the descriptor, whatever happens */
  clock_gettime(CLOCK_REALTIME, &now);
  rc = cache_snapshot_encode(db_fd, txid, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000,
                             ltx_fd, &h, &size, &err);
  if (rc) {
    ltx_error_prefix(&err, "%s", argv[1]);
    goto out;
  }
  store_ltx_key(st, level, 1, txid, key, sizeof key);
  rc = store_put_fd(st, key, ltx_fd, size, h.timestamp_ms, STORE_PUT_IF_ABSENT, NULL, NULL, 0,
                    &err);
  if (rc) goto out;
  printf("imported %s as TXID %016" PRIx64 " (%" PRIu64 " bytes) into %s\n", argv[1], txid, size,
         key);

out:
  if (rc) status = report(&err);
  if (db_fd >= 0) close(db_fd);
  if (ltx_fd >= 0) close(ltx_fd);
  if (have_db_tmp) unlink(db_tmp);
  store_ltx_list_free(&all);
  store_close(st);
  return status;
}

/* ---- ltx dump / verify ---- */

/* n bytes at off of fd, all of them; LTX_ERR_TRUNCATED when the file ends. */
static int pread_exact(int fd, const char *path, uint64_t off, uint8_t *buf, size_t n,
                       ltx_error *err) {
  for (size_t got = 0; got < n;) {
    ssize_t r = pread(fd, buf + got, n - got, (off_t)(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ltx_error_set(err, LTX_ERR_IO, "%s: read: %s", path, strerror(errno));
    if (r == 0)
      return ltx_error_set(err, LTX_ERR_TRUNCATED, "%s: ends at offset %" PRIu64, path,
                           off + got);
    got += (size_t)r;
  }
  return LTX_OK;
}

/* The page index of an LTX file open at fd: its tail only, in at most two
** reads, never more than the header's commit allows (bounded memory). */
static int read_index(int fd, const char *path, uint64_t size, uint32_t commit, ltx_index *idx,
                      uint8_t trailer[LTX_TRAILER_SIZE], ltx_error *err) {
  size_t n = size < LTX_INDEX_TAIL_GUESS ? (size_t)size : LTX_INDEX_TAIL_GUESS, need = 0;
  uint8_t *tail = malloc(n ? n : 1);
  int rc;
  if (tail == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
  rc = pread_exact(fd, path, size - n, tail, n, err);
  if (rc == LTX_OK) rc = ltx_index_parse_tail(tail, n, size, idx, &need, err);
  if (rc == LTX_ERR_TRUNCATED && need > n && need <= size) {
    uint8_t *bigger;
    if (need > LTX_INDEX_MAX_BYTES(commit)) {
      rc = ltx_error_set(err, LTX_ERR_INDEX,
                         "the tail claims a %zu-byte page index; %u pages need at most %" PRIu64,
                         need, commit, LTX_INDEX_MAX_BYTES(commit));
      goto out;
    }
    bigger = realloc(tail, need);
    if (bigger == NULL) {
      rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory for a %zu-byte index", need);
      goto out;
    }
    tail = bigger;
    n = need;
    rc = pread_exact(fd, path, size - n, tail, n, err);
    if (rc == LTX_OK) rc = ltx_index_parse_tail(tail, n, size, idx, &need, err);
  }
  if (rc == LTX_OK) memcpy(trailer, tail + n - LTX_TRAILER_SIZE, LTX_TRAILER_SIZE);
out:
  free(tail);
  return rc;
}

static int cmd_ltx_dump(int argc, char **argv) {
  uint8_t hdr[LTX_HEADER_SIZE], trailer[LTX_TRAILER_SIZE];
  ltx_header h;
  ltx_index idx = {0};
  ltx_error err = {0};
  struct stat sb;
  char ts[40];
  int fd = -1, rc, status = EXIT_OK;
  uint64_t size = 0;

  if (wants_help(argc, argv)) return fputs(usage_ltx_dump, stdout), EXIT_OK;
  if (argc != 2) return usage_error(usage_ltx_dump, "ltx dump takes one FILE%s", "");
  fd = open(argv[1], O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &sb) != 0) {
    rc = ltx_error_set(&err, LTX_ERR_IO, "%s: %s", argv[1], strerror(errno));
    goto out;
  }
  size = (uint64_t)sb.st_size;
  if (size < LTX_HEADER_SIZE) {
    rc = ltx_error_set(&err, LTX_ERR_TRUNCATED, "%" PRIu64 " bytes, shorter than a header", size);
    goto out;
  }
  rc = pread_exact(fd, argv[1], 0, hdr, sizeof hdr, &err);
  if (rc == LTX_OK) rc = ltx_header_decode(hdr, &h, &err);
  if (rc) goto out;
  ltx_time_format(h.timestamp_ms, ts, sizeof ts);
  printf("file:        %s (%" PRIu64 " bytes)\n", argv[1], size);
  printf("flags:       0x%x%s\n", h.flags,
         h.flags & LTX_HEADER_FLAG_NO_CHECKSUM ? " (no database checksums)" : "");
  printf("page size:   %u\n", h.page_size);
  printf("commit:      %u pages\n", h.commit);
  printf("txid:        %016" PRIx64 "-%016" PRIx64 "%s\n", h.min_txid, h.max_txid,
         ltx_header_is_snapshot(&h) ? " (snapshot)" : "");
  printf("timestamp:   %s (%" PRId64 " ms)\n", ts, h.timestamp_ms);
  printf("pre-apply:   %016" PRIx64 "\n", h.pre_apply_checksum);
  printf("wal:         offset %" PRIu64 " size %" PRIu64 " salts %08x %08x\n", h.wal_offset,
         h.wal_size, h.wal_salt1, h.wal_salt2);
  printf("node id:     %" PRIu64 "\n", h.node_id);
  rc = read_index(fd, argv[1], size, h.commit, &idx, trailer, &err);
  if (rc) goto out;
  {
    uint64_t post = 0, file = 0;
    for (int i = 0; i < 8; i++) {
      post = post << 8 | trailer[i];
      file = file << 8 | trailer[8 + i];
    }
    printf("post-apply:  %016" PRIx64 "\n", post);
    printf("file cksum:  %016" PRIx64 "\n", file);
  }
  printf("pages:       %zu\n", idx.n);
  printf("%10s  %12s  %8s\n", "pgno", "offset", "size");
  for (size_t i = 0; i < idx.n; i++)
    printf("%10u  %12" PRIu64 "  %8u\n", idx.entries[i].pgno, idx.entries[i].offset,
           idx.entries[i].size);
out:
  if (rc) {
    if (err.code != LTX_ERR_IO && strstr(err.msg, argv[1]) == NULL)
      ltx_error_prefix(&err, "%s", argv[1]);
    status = report(&err);
  }
  if (fd >= 0) close(fd);
  ltx_index_free(&idx);
  return status;
}

typedef struct fd_reader {
  int fd;
  const char *path;
} fd_reader;

static int fd_read(void *ctx, uint8_t *buf, size_t n, size_t *nread, ltx_error *err) {
  fd_reader *r = ctx;
  for (;;) {
    ssize_t got = read(r->fd, buf, n);
    if (got >= 0) {
      *nread = (size_t)got;
      return LTX_OK;
    }
    if (errno != EINTR) return ltx_error_set(err, LTX_ERR_IO, "read: %s", strerror(errno));
  }
}

/* Streams one file through the decoder: memory stays at one page plus the
** index, whatever the file's size. */
static int verify_file(const char *path, ltx_header *h, size_t *n_pages, ltx_error *err) {
  fd_reader r = {open(path, O_RDONLY), path};
  ltx_decoder *dec = NULL;
  uint8_t *page = NULL;
  ltx_trailer tr;
  int rc = LTX_OK;
  *n_pages = 0;
  if (r.fd < 0) {
    rc = ltx_error_set(err, LTX_ERR_IO, "open: %s", strerror(errno));
    goto out;
  }
  rc = ltx_decoder_open(&dec, fd_read, &r, err);
  if (rc) goto out;
  *h = *ltx_decoder_header(dec);
  page = malloc(h->page_size);
  if (!page) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (;;) {
    uint32_t pgno;
    rc = ltx_decoder_next(dec, &pgno, page, err);
    if (rc == LTX_DONE) break;
    if (rc) goto out;
    (*n_pages)++;
  }
  rc = ltx_decoder_finish(dec, &tr, NULL, err);
out:
  ltx_decoder_free(dec);
  free(page);
  if (r.fd >= 0) close(r.fd);
  return rc;
}

static int cmd_ltx_verify(int argc, char **argv) {
  int status = EXIT_OK;
  if (wants_help(argc, argv)) return fputs(usage_ltx_verify, stdout), EXIT_OK;
  if (argc < 2) return usage_error(usage_ltx_verify, "ltx verify takes FILE...%s", "");
  for (int i = 1; i < argc; i++) {
    ltx_error err = {0};
    ltx_header h = {0};
    size_t n_pages;
    int rc = verify_file(argv[i], &h, &n_pages, &err);
    if (rc == LTX_OK) {
      printf("%s: ok (txid %016" PRIx64 "-%016" PRIx64 ", %zu pages, commit %u)\n", argv[i],
             h.min_txid, h.max_txid, n_pages, h.commit);
    } else {
      int code = exit_code_for(rc);
      printf("%s: INVALID: %s\n", argv[i], err.msg);
      if (status == EXIT_OK || code == EXIT_INVALID) status = code;
    }
  }
  return status;
}

/* ---- hydrate ---- */

static int cmd_hydrate(int argc, char **argv) {
  static const struct option opts[] = {{"cache-dir", required_argument, NULL, 'c'},
                                       {"cache-max", required_argument, NULL, 'm'},
                                       {"timeout", required_argument, NULL, 't'},
                                       {"txid", required_argument, NULL, 'x'},
                                       {"quiet", no_argument, NULL, 'q'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  char root[1024];
  const char *dir = NULL, *max_arg = getenv("LTVFS_CACHE_MAX");
  long long cache_max = 0;
  long timeout_s = 3600;
  uint64_t txid = 0;
  int quiet = 0, c, status = EXIT_OK, rc;
  replica *r = NULL;
  replica_view *v = NULL;
  replica_stat st;
  ltx_error err = {0};
  progress_bar bar = {0, -1};
  struct timespec t0, now;

  clock_gettime(CLOCK_MONOTONIC, &t0);
  optind = 1;
  while ((c = getopt_long(argc, argv, "c:t:qh", opts, NULL)) != -1) {
    switch (c) {
    case 'c': dir = optarg; break;
    case 'm': max_arg = optarg; break;
    case 't': {
      char *end;
      timeout_s = strtol(optarg, &end, 10);
      if (*end || timeout_s <= 0) return usage_error(usage_hydrate, "bad --timeout '%s'", optarg);
      break;
    }
    case 'x':
      if (ltx_txid_parse(optarg, &txid))
        return usage_error(usage_hydrate, "--txid %s is not a non-zero hex TXID", optarg);
      break;
    case 'q': quiet = 1; break;
    case 'h': return fputs(usage_hydrate, stdout), EXIT_OK;
    default: return usage_error(usage_hydrate, "%s", "");
    }
  }
  if (optind != argc - 1) return usage_error(usage_hydrate, "hydrate takes one URL%s", "");
  if (max_arg != NULL && *max_arg && (cache_max = vfs_parse_size(max_arg)) < 0)
    return usage_error(usage_hydrate, "--cache-max (or LTVFS_CACHE_MAX) %s: not a size", max_arg);
  if (dir == NULL) {
    /* the VFS's own choice, so that what is filled here is what it reads */
    if (vfs_cache_root(NULL, NULL, root, sizeof(root), &err) != LTX_OK) return report(&err);
    if (root[0] == '\0') {
      ltx_error_set(&err, LTX_ERR_ARG, "LITESTREAM_CACHE_DIR=%s turns the local image off: "
                    "nothing to hydrate (give --cache-dir DIR)", getenv("LITESTREAM_CACHE_DIR"));
      return report(&err);
    }
    dir = root;
  }
  /* pinned: no poller, so the image stays at the TXID asked */
  replica_config cfg = {.poll_ms = txid ? 0 : 1000, .cache_bytes = 8u << 20,
                        .open_timeout_ms = 10000, .prefetch_max = 4u << 20, .cache_dir = dir,
                        .cache_max = (uint64_t)cache_max, .hydrate = 1, .hydrate_alone = 1,
                        .open_txid = txid};
  bar.enabled = !quiet && isatty(STDERR_FILENO);
  rc = replica_acquire(argv[optind], &cfg, &r, &err);
  if (rc == LTX_OK) rc = replica_latest(r, &v, &err);
  if (rc != LTX_OK) goto out;
  replica_stats(r, &st);
  if (st.image_dir[0] == '\0') {
    rc = ltx_error_set(&err, CACHE_ERR_IO, "no local image for %s in %s (see the message above)",
                       argv[optind], dir);
    goto out;
  }
  /* A warm image opens at its own TXID and the poller moves it on later:
  ** the image is hydrated once it holds what the store has now, listed
  ** here (the image being whole at its old TXID is not enough). */
  uint64_t want = txid;
  if (want == 0 && (rc = replica_newest_txid(r, &want, &err)) != LTX_OK) goto out;
  for (;;) {
    replica_stats(r, &st);
    uint64_t pages = st.image_commit ? st.image_commit : replica_view_commit(v);
    uint64_t ps = replica_view_page_size(v);
    progress_draw(&bar, (st.image.held < pages ? st.image.held : pages) * ps, pages * ps);
    if (st.hydrate_phase == REPLICA_HYDRATE_DONE && st.image_txid >= want) break;
    if (st.image_fits == 0) {
      rc = ltx_error_set(&err, CACHE_ERR_IO, "the database (%" PRIu64 " bytes) does not fit in the "
                         "local image's %" PRIu64 " bytes (%s): nothing was filled (an application "
                         "reading it caches it partially, as it reads)", pages * replica_view_page_size(v),
                         st.image_budget, st.image_budget_cache_max ? "--cache-max / LTVFS_CACHE_MAX"
                         : "the free space in the cache directory, less a reserve");
      goto out;
    }
    if (st.image.disabled) {
      rc = ltx_error_set(&err, CACHE_ERR_IO, "the local image stopped growing (disk full?) at "
                         "%" PRIu64 " of %" PRIu64 " pages", st.image.held, pages);
      goto out;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - t0.tv_sec > timeout_s) {
      rc = ltx_error_set(&err, CACHE_ERR_TIMEOUT, "hydration not done after %ld s (%" PRIu64
                         " of %" PRIu64 " pages; last poll error: %s)", timeout_s, st.image.held,
                         pages, st.last_poll_error[0] ? st.last_poll_error : "none");
      goto out;
    }
    replica_hydration_wait(r, 50); /* returns as soon as it is done */
  }
  if (bar.enabled && bar.last_percent != 100)
    progress_draw(&bar, st.image.held * replica_view_page_size(v), st.image.held * replica_view_page_size(v));
  {
    char fetched[32];
    clock_gettime(CLOCK_MONOTONIC, &now);
    printf("hydrated %s at TXID %016" PRIx64 " (%" PRIu64 " pages) in %s (%.2f s; %s fetched in %"
           PRIu64 " requests)\n", argv[optind], st.image_txid, st.image.held, st.image_dir,
           (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9,
           human_size(st.bytes_fetched, fetched, sizeof fetched), st.requests);
  }
out:
  if (rc) status = report(&err);
  if (v) replica_view_release(v);
  replica_release(r);
  return status;
}

/* The commands, and the subcommands of `ltvfs ltx`: name, handler (gets
** argv from its own name on), usage text. */
typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *usage;
} command;

static const command kLtxCommands[] = {
    {"dump", cmd_ltx_dump, usage_ltx_dump},
    {"verify", cmd_ltx_verify, usage_ltx_verify},
};

static const command *find_command(const command *table, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(table[i].name, name) == 0) return &table[i];
  return NULL;
}

static int cmd_ltx(int argc, char **argv) {
  const size_t n = sizeof(kLtxCommands) / sizeof(kLtxCommands[0]);
  const command *c;
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    FILE *out = argc < 2 ? stderr : stdout;
    for (size_t i = 0; i < n; i++) fprintf(out, "%s%s", i ? "\n" : "", kLtxCommands[i].usage);
    return argc < 2 ? EXIT_USAGE : EXIT_OK;
  }
  c = find_command(kLtxCommands, n, argv[1]);
  if (c == NULL) return usage_error(usage_main, "unknown ltx command '%s'", argv[1]);
  return c->run(argc - 1, argv + 1);
}

static const command kCommands[] = {
    {"ls", cmd_ls, usage_ls},
    {"restore", cmd_restore, usage_restore},
    {"import", cmd_import, usage_import},
    {"ltx", cmd_ltx, NULL},
    {"hydrate", cmd_hydrate, usage_hydrate},
};

int main(int argc, char **argv) {
  const command *c;
  if (argc < 2) return fputs(usage_main, stderr), EXIT_USAGE;
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))
    return fputs(usage_main, stdout), EXIT_OK;
  if (!strcmp(argv[1], "--version")) return printf("ltvfs %s\n", PACKAGE_VERSION), EXIT_OK;
  c = find_command(kCommands, sizeof(kCommands) / sizeof(kCommands[0]), argv[1]);
  if (c == NULL) return usage_error(usage_main, "unknown command '%s'", argv[1]);
  log_configure();
  return c->run(argc - 1, argv + 1);
}
