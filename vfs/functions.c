/*
** functions.c: the SQL face of a replica connection: the Go VFS's
** functions and PRAGMAs (litestream_txid, _lag, _time, _set_time, PRAGMA
** litestream_time = ts) and ours (ltvfs_pinned_txid, ltvfs_stats,
** ltvfs_last_error), and the deferred open error. Each function takes an
** optional last argument, the schema, for connections with several
** replicas ATTACHed; without it, the first replica of the connection.
**
** The functions are SQLITE_DIRECTONLY: litestream_set_time moves the
** connection's view, which a view or trigger of the database must not do.
*/
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>

#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT3

#include "vfs/replica_file.h"
#include "vfs/vfs.h"

/* ---- what the SQL functions and PRAGMAs report ---- */

static char *fmt_txid(uint64_t txid) { return sqlite3_mprintf("%016llx", (unsigned long long)txid); }

static char *fmt_time(int64_t ms) {
  char ts[LTX_TIME_CAP];
  return sqlite3_mprintf("%s", ltx_time_format(ms, ts, sizeof(ts)));
}

/* s as the body of a JSON string (quotes, backslashes, control bytes
** escaped) into out. */
static void json_escape(const char *s, char *out, size_t cap) {
  size_t n = 0;
  for (; *s && n + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      out[n++] = '\\';
      out[n++] = (char)c;
    } else if (c < 0x20) {
      n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
    } else {
      out[n++] = (char)c;
    }
  }
  out[n] = '\0';
}

static char *fmt_stats(lt_file *p) {
  replica_stat s;
  replica_view *v = NULL;
  char poll_error[sizeof(s.last_poll_error) * 2], image_dir[sizeof(s.image_dir) * 2];
  static const char *const kPhase[] = {"off", "idle", "filling", "applying", "done"};
  vfs_current_view(p, &v);
  replica_stats(p->rep, &s);
  json_escape(s.last_poll_error, poll_error, sizeof(poll_error));
  json_escape(s.image_dir, image_dir, sizeof(image_dir));
  typedef unsigned long long ull;
  return sqlite3_mprintf(
      "{\"txid\":\"%016llx\",\"commit\":%u,\"page_size\":%u,\"pinned\":%d,"
      "\"cache_hits\":%llu,\"cache_misses\":%llu,\"cache_bytes\":%llu,"
      "\"cache_limit\":%llu,\"cache_entries\":%llu,\"cache_evictions\":%llu,"
      "\"requests\":%llu,\"bytes_fetched\":%llu,\"coalesced\":%llu,"
      "\"polls\":%llu,\"poll_errors\":%llu,\"lag\":%lld,\"pending_files\":%llu,"
      "\"last_poll_error\":\"%s\",\"hydration\":\"%s\",\"hydration_progress\":%d,"
      "\"image_txid\":\"%016llx\",\"image_pages\":%llu,\"image_held\":%llu,"
      "\"image_hits\":%llu,\"image_misses\":%llu,\"image_bytes_written\":%llu,"
      "\"image_evicted\":%llu,"
      "\"image_dir\":\"%s\"}",
      (ull)(v ? replica_view_txid(v) : 0), v ? replica_view_commit(v) : 0,
      v ? replica_view_page_size(v) : 0, p->pin != NULL, (ull)s.cache.hits, (ull)s.cache.misses,
      (ull)s.cache.bytes, (ull)s.cache.limit, (ull)s.cache.entries, (ull)s.cache.evictions,
      (ull)s.requests, (ull)s.bytes_fetched, (ull)s.coalesced, (ull)s.polls,
      (ull)s.poll_errors, (long long)replica_lag_seconds(p->rep), (ull)s.pending_files,
      poll_error, kPhase[s.hydrate_phase < 0 || s.hydrate_phase > 4 ? 0 : s.hydrate_phase],
      replica_hydration_percent(p->rep), (ull)s.image_txid, (ull)s.image_commit,
      (ull)s.image.held, (ull)s.image.hits, (ull)s.image.misses, (ull)s.image.bytes_written,
      (ull)s.image.evicted,
      image_dir);
}

/* Moves the connection to the state at ts ('LATEST' = follow the newest);
** the next read transaction sees it. NULL or a message to sqlite3_free. */
static char *set_time(lt_file *p, const char *ts) {
  ltx_error err = {0};
  replica_view *v = NULL;
  int64_t ms;
  if (ts == NULL) return sqlite3_mprintf("litestream_set_time: NULL time");
  if (strcasecmp(ts, "LATEST") == 0) {
    if (p->pin) replica_view_release(p->pin);
    p->pin = NULL;
    p->pin_time_ms = -1;
    return NULL;
  }
  ms = ltx_time_parse(ts);
  if (ms < 0)
    return sqlite3_mprintf("litestream_set_time: '%s' is not an RFC 3339 time or 'LATEST'", ts);
  /* The newest state whose files were all written strictly before ts, as
  ** restore --timestamp has it (docs/restore-plan.md). */
  if (replica_view_at(p->rep, 0, ms, &v, &err) != LTX_OK)
    return sqlite3_mprintf("litestream_set_time: %s", err.msg);
  if (p->pin) replica_view_release(p->pin);
  p->pin = v;
  p->pin_time_ms = ms;
  return NULL;
}

/* PRAGMA litestream_txid | litestream_lag | litestream_time [= ts] |
** ltvfs_stats | ltvfs_pinned_txid. */
int vfs_file_pragma(lt_file *p, char **azArg) {
  const char *name = azArg[1], *val = azArg[2];
  replica_view *v = NULL;
  int rc;
  if (strcasecmp(name, "litestream_txid") && strcasecmp(name, "litestream_lag") &&
      strcasecmp(name, "litestream_time") && strcasecmp(name, "ltvfs_stats") &&
      strcasecmp(name, "ltvfs_pinned_txid") && strcasecmp(name, "ltvfs_last_error") &&
      strcasecmp(name, "litestream_hydration_progress"))
    return SQLITE_NOTFOUND;
  if (strcasecmp(name, "ltvfs_last_error") == 0 && val == NULL) {
    /* SQLite words every I/O error "disk I/O error"; the reason is here.
    ** Without a failure of its own, the connection reports why the replica
    ** is not following (the poller's last error), which it also reads. */
    const char *e = p->open_rc != SQLITE_OK ? p->open_err : p->last_error;
    if (e && *e) {
      azArg[0] = sqlite3_mprintf("%s", e);
    } else if (p->rep == NULL) {
      azArg[0] = NULL;
    } else {
      replica_stat s;
      replica_stats(p->rep, &s);
      azArg[0] = s.last_poll_error[0] ? sqlite3_mprintf("poll: %s", s.last_poll_error) : NULL;
    }
    return SQLITE_OK;
  }
  if (p->open_rc != SQLITE_OK) {
    azArg[0] = sqlite3_mprintf("%s", p->open_err ? p->open_err : "open failed");
    return SQLITE_ERROR;
  }
  if (strcasecmp(name, "litestream_time") == 0 && val != NULL) {
    char *e = set_time(p, val);
    if (e) {
      azArg[0] = e;
      return SQLITE_ERROR;
    }
    return SQLITE_OK;
  }
  if (val != NULL) {
    azArg[0] = sqlite3_mprintf("PRAGMA %s is read-only", name);
    return SQLITE_ERROR;
  }
  if (strcasecmp(name, "litestream_lag") == 0) {
    azArg[0] = sqlite3_mprintf("%lld", (long long)replica_lag_seconds(p->rep));
    return SQLITE_OK;
  }
  if (strcasecmp(name, "ltvfs_stats") == 0) {
    azArg[0] = fmt_stats(p);
    return SQLITE_OK;
  }
  if (strcasecmp(name, "litestream_hydration_progress") == 0) {
    /* The Go VFS's name: percent of the pages the local image holds. */
    azArg[0] = sqlite3_mprintf("%d", replica_hydration_percent(p->rep));
    return SQLITE_OK;
  }
  if (strcasecmp(name, "ltvfs_pinned_txid") == 0) {
    azArg[0] = p->pin ? fmt_txid(replica_view_txid(p->pin)) : NULL;
    return SQLITE_OK;
  }
  if (p->pin) {
    v = p->pin;
  } else {
    /* Outside a read transaction, report what the next one will see. */
    if (p->lock == SQLITE_LOCK_NONE && p->view) {
      replica_view_release(p->view);
      p->view = NULL;
    }
    if ((rc = vfs_current_view(p, &v)) != SQLITE_OK) return rc;
  }
  azArg[0] = strcasecmp(name, "litestream_txid") == 0
                 ? fmt_txid(replica_view_txid(v))
                 : fmt_time(replica_view_timestamp_ms(v));
  return SQLITE_OK;
}

/* ---- SQL functions ---- */

/* The litestream file of schema (or the first litestream database). */
static lt_file *file_of(sqlite3 *db, const char *schema) {
  sqlite3_file *pf = NULL;
  if (schema != NULL) {
    if (sqlite3_file_control(db, schema, SQLITE_FCNTL_FILE_POINTER, &pf) == SQLITE_OK && pf &&
        pf->pMethods == &vfs_replica_io_methods)
      return (lt_file *)pf;
    return NULL;
  }
  for (int i = 0;; i++) {
    const char *name = sqlite3_db_name(db, i);
    if (name == NULL) break;
    pf = NULL;
    if (sqlite3_file_control(db, name, SQLITE_FCNTL_FILE_POINTER, &pf) == SQLITE_OK && pf &&
        pf->pMethods == &vfs_replica_io_methods)
      return (lt_file *)pf;
  }
  return NULL;
}

/* Finds the file for a function call whose optional last argument (index
** schema_arg) names the schema; reports the error itself when there is none. */
static lt_file *call_file(sqlite3_context *ctx, int argc, sqlite3_value **argv, int schema_arg,
                          const char *fn) {
  const char *schema = argc > schema_arg ? (const char *)sqlite3_value_text(argv[schema_arg]) : NULL;
  lt_file *p = file_of(sqlite3_context_db_handle(ctx), schema);
  if (p == NULL) {
    char *m = schema ? sqlite3_mprintf("%s: database '%s' is not a litestream replica", fn, schema)
                     : sqlite3_mprintf("%s: no litestream replica is open on this connection", fn);
    sqlite3_result_error(ctx, m ? m : fn, -1);
    sqlite3_free(m);
    return NULL;
  }
  if (p->open_rc != SQLITE_OK) {
    char *m = sqlite3_mprintf("%s: %s", fn, p->open_err ? p->open_err : "open failed");
    sqlite3_result_error(ctx, m ? m : fn, -1);
    sqlite3_free(m);
    return NULL;
  }
  return p;
}

static void result_owned_text(sqlite3_context *ctx, char *z) {
  if (z == NULL) sqlite3_result_null(ctx);
  else sqlite3_result_text(ctx, z, -1, sqlite3_free);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ltvfs_stats() of a primary: JSON, as the replica's. */
static char *fmt_primary_stats(primary *pr) {
  primary_stats s;
  char err[1100], when[LTX_TIME_CAP];
  primary_get_stats(pr, &s);
  json_escape(s.last_error, err, sizeof err);
  ltx_time_format(s.lease_expires_ms, when, sizeof when);
  return sqlite3_mprintf(
      "{\"role\":\"primary\",\"txid\":\"%016llx\",\"txid_spooled\":\"%016llx\","
      "\"spool_files\":%llu,\"spool_bytes\":%llu,\"upload_lag_ms\":%lld,\"uploads\":%llu,"
      "\"bytes_uploaded\":%llu,\"upload_failures\":%llu,\"captures\":%llu,\"snapshots\":%llu,\"uploader\":%s,"
      "\"lease_held\":%s,\"lease_owner\":\"%s\",\"lease_expires\":\"%s\",\"last_error\":%s%s%s}",
      (unsigned long long)s.txid_uploaded, (unsigned long long)s.txid_spooled,
      (unsigned long long)s.spool_files, (unsigned long long)s.spool_bytes,
      (long long)(s.oldest_pending_ms ? now_ms() - s.oldest_pending_ms : 0),
      (unsigned long long)s.uploads, (unsigned long long)s.bytes_uploaded,
      (unsigned long long)s.upload_failures,
      (unsigned long long)s.captures, (unsigned long long)s.snapshots, s.uploader ? "true" : "false",
      s.lease_held ? "true" : "false", s.lease_owner, s.lease_expires_ms ? when : "",
      s.last_error[0] ? "\"" : "null", s.last_error[0] ? err : "", s.last_error[0] ? "\"" : "");
}

/* The litestream functions on a connection whose database is a primary
** (litestream-primary): 1 when name was answered. */
static int primary_call(sqlite3_context *ctx, int argc, sqlite3_value **argv, const char *name) {
  const char *schema = argc > 0 ? (const char *)sqlite3_value_text(argv[0]) : NULL;
  const char *open_err = NULL;
  primary *pr = vfs_primary_of(sqlite3_context_db_handle(ctx), schema, &open_err);
  if (pr == NULL && open_err == NULL) return 0;
  if (pr == NULL) {
    char *m = sqlite3_mprintf("%s: %s", name, open_err);
    sqlite3_result_error(ctx, m ? m : name, -1);
    sqlite3_free(m);
    return 1;
  }
  if (strcmp(name, "litestream_txid") == 0) {
    result_owned_text(ctx, fmt_txid(primary_txid(pr)));
  } else if (strcmp(name, "ltvfs_stats") == 0) {
    result_owned_text(ctx, fmt_primary_stats(pr));
  } else {
    char *m = sqlite3_mprintf("%s: not available on a litestream-primary database", name);
    sqlite3_result_error(ctx, m ? m : name, -1);
    sqlite3_free(m);
  }
  return 1;
}

static void fn_pragma_like(sqlite3_context *ctx, int argc, sqlite3_value **argv, const char *name) {
  lt_file *p;
  char *az[3] = {NULL, (char *)name, NULL};
  if (file_of(sqlite3_context_db_handle(ctx), argc > 0 ? (const char *)sqlite3_value_text(argv[0]) : NULL) == NULL &&
      primary_call(ctx, argc, argv, name))
    return;
  p = call_file(ctx, argc, argv, 0, name);
  if (p == NULL) return;
  int rc = vfs_file_pragma(p, az);
  if (rc != SQLITE_OK) {
    sqlite3_result_error(ctx, az[0] ? az[0] : name, -1);
    sqlite3_result_error_code(ctx, rc == SQLITE_ERROR ? SQLITE_ERROR : rc);
    sqlite3_free(az[0]);
    return;
  }
  result_owned_text(ctx, az[0]);
}

static void fn_txid(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  fn_pragma_like(ctx, argc, argv, "litestream_txid");
}
static void fn_time(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  fn_pragma_like(ctx, argc, argv, "litestream_time");
}
static void fn_stats(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  fn_pragma_like(ctx, argc, argv, "ltvfs_stats");
}
static void fn_pinned(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  fn_pragma_like(ctx, argc, argv, "ltvfs_pinned_txid");
}
static void fn_last_error(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *schema = argc > 0 ? (const char *)sqlite3_value_text(argv[0]) : NULL;
  lt_file *p = file_of(sqlite3_context_db_handle(ctx), schema);
  char *az[3] = {NULL, (char *)"ltvfs_last_error", NULL};
  if (p == NULL) { /* no replica here: a primary's error, or none */
    const char *e = vfs_primary_last_error(sqlite3_context_db_handle(ctx));
    if (e && *e) sqlite3_result_text(ctx, e, -1, SQLITE_TRANSIENT);
    else sqlite3_result_null(ctx);
    return;
  }
  vfs_file_pragma(p, az);
  result_owned_text(ctx, az[0]);
}
static void fn_lag(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  lt_file *p = call_file(ctx, argc, argv, 0, "litestream_lag");
  if (p) sqlite3_result_int64(ctx, replica_lag_seconds(p->rep));
}
static void fn_set_time(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  lt_file *p = call_file(ctx, argc, argv, 1, "litestream_set_time");
  char *e;
  if (p == NULL) return;
  e = set_time(p, (const char *)sqlite3_value_text(argv[0]));
  if (e) {
    sqlite3_result_error(ctx, e, -1);
    sqlite3_free(e);
    return;
  }
  sqlite3_result_null(ctx);
}

int vfs_register_functions(sqlite3 *db) {
  static const struct {
    const char *name;
    int nmin, nmax;
    void (*fn)(sqlite3_context *, int, sqlite3_value **);
  } kFn[] = {
      {"litestream_txid", 0, 1, fn_txid},     {"litestream_lag", 0, 1, fn_lag},
      {"litestream_time", 0, 1, fn_time},     {"litestream_set_time", 1, 2, fn_set_time},
      {"ltvfs_pinned_txid", 0, 1, fn_pinned}, {"ltvfs_stats", 0, 1, fn_stats},
      {"ltvfs_last_error", 0, 1, fn_last_error},
  };
  int rc = SQLITE_OK;
  for (size_t i = 0; i < sizeof(kFn) / sizeof(kFn[0]) && rc == SQLITE_OK; i++)
    for (int n = kFn[i].nmin; n <= kFn[i].nmax && rc == SQLITE_OK; n++)
      rc = sqlite3_create_function(db, kFn[i].name, n, SQLITE_UTF8 | SQLITE_DIRECTONLY, NULL,
                                   kFn[i].fn, NULL, NULL);
  return rc;
}

int vfs_open_error(sqlite3 *db, char **pzErrMsg) {
  sqlite3_file *pf = NULL;
  if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &pf) != SQLITE_OK || pf == NULL ||
      pf->pMethods != &vfs_replica_io_methods)
    return SQLITE_OK;
  lt_file *p = (lt_file *)pf;
  if (p->open_rc == SQLITE_OK) return SQLITE_OK;
  if (pzErrMsg) *pzErrMsg = sqlite3_mprintf("ltvfs: %s", p->open_err ? p->open_err : "open failed");
  return p->open_rc;
}
