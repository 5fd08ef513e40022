/*
** config.c: the replica VFS's configuration. Every setting is read at every
** open: the URI parameter wins over the environment variable (the Go VFS's
** names where it has one), which wins over the default. Pure: no SQLite and
** no I/O, so tests/check_vfs_config.c tests it directly; the VFS passes
** sqlite3_uri_parameter as the lookup.
*/
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "vfs/vfs.h"

#define DEFAULT_POLL_MS 1000
/* With pages on disk the memory cache holds what the image cannot (pages of
** other versions, runs in flight): smaller than before the image. */
#define DEFAULT_CACHE_BYTES (16u << 20)
#define DEFAULT_OPEN_TIMEOUT_MS 10000
#define DEFAULT_PREFETCH_MAX (4u << 20)

int vfs_log_level_env(void) {
  static const char *const kLevel[] = {"debug", "info", "warn", "error"};
  const char *v = getenv("LITESTREAM_LOG_LEVEL");
  int level = REPLICA_LOG_WARN;
  for (int i = REPLICA_LOG_DEBUG; v && i <= REPLICA_LOG_ERROR; i++)
    if (strcasecmp(v, kLevel[i]) == 0 || (i == REPLICA_LOG_WARN && strcasecmp(v, "warning") == 0))
      level = i;
  return level;
}

/* "250", "250ms", "1s", "1.5s", "2m", "1h" -> ms; -1 if malformed. */
long vfs_parse_duration_ms(const char *z) {
  char *end = NULL;
  double v;
  errno = 0;
  v = strtod(z, &end);
  if (errno || end == z || v < 0) return -1;
  if (*end == '\0' || strcmp(end, "ms") == 0) return (long)v;
  if (strcmp(end, "s") == 0) return (long)(v * 1000);
  if (strcmp(end, "m") == 0) return (long)(v * 60000);
  if (strcmp(end, "h") == 0) return (long)(v * 3600000);
  if (strcmp(end, "us") == 0 || strcmp(end, "µs") == 0) return (long)(v / 1000);
  return -1;
}

/* "33554432", "64K", "32M", "1G" (also KB/MB/GB, KiB/MiB/GiB) -> bytes. */
long long vfs_parse_size(const char *z) {
  char *end = NULL;
  long long v;
  errno = 0;
  v = strtoll(z, &end, 10);
  if (errno || end == z || v < 0) return -1;
  switch (toupper((unsigned char)*end)) {
    case '\0': return v;
    case 'K': v <<= 10; break;
    case 'M': v <<= 20; break;
    case 'G': v <<= 30; break;
    default: return -1;
  }
  end++;
  if (*end == '\0' || strcasecmp(end, "B") == 0 || strcasecmp(end, "iB") == 0) return v;
  return -1;
}

/* 1, 0, or -1 when z is not a boolean. */
static int parse_bool(const char *z) {
  if (!strcasecmp(z, "1") || !strcasecmp(z, "true") || !strcasecmp(z, "yes") || !strcasecmp(z, "on"))
    return 1;
  if (!strcasecmp(z, "0") || !strcasecmp(z, "false") || !strcasecmp(z, "no") || !strcasecmp(z, "off"))
    return 0;
  return -1;
}

/* The URI parameter key, else the environment variable env (may be NULL);
** NULL when neither is set or it is empty. */
static const char *param(vfs_param_fn uri, void *ctx, const char *key, const char *env) {
  const char *v = uri ? uri(ctx, key) : NULL;
  if (v == NULL && env != NULL) v = getenv(env);
  return v && *v ? v : NULL;
}

/* Where local images live: cache_dir= (not "cache=", which is SQLite's
** own URI parameter), else LITESTREAM_CACHE_DIR ("off" or "none" in either:
** no disk cache), else beside the Go VFS's LITESTREAM_HYDRATION_PATH
** (its hydrated file's path + ".ltvfs"), else $XDG_CACHE_HOME/ltvfs, else
** ~/.cache/ltvfs, else a directory of this user's under the temp dir. */
int vfs_cache_root(vfs_param_fn uri, void *ctx, char *out, size_t cap, ltx_error *err) {
  const char *v = uri ? uri(ctx, "cache_dir") : NULL, *home;
  int n;
  if (v == NULL) v = getenv("LITESTREAM_CACHE_DIR");
  if (v != NULL && (*v == '\0' || !strcasecmp(v, "off") || !strcasecmp(v, "none") ||
                    !strcmp(v, "0"))) {
    out[0] = '\0';
    return LTX_OK;
  }
  if (v != NULL && *v) {
    n = snprintf(out, cap, "%s", v);
  } else if ((v = getenv("LITESTREAM_HYDRATION_PATH")) != NULL && *v) {
    n = snprintf(out, cap, "%s.ltvfs", v);
  } else if ((home = getenv("XDG_CACHE_HOME")) != NULL && *home == '/') {
    n = snprintf(out, cap, "%s/ltvfs", home);
  } else if ((home = getenv("HOME")) != NULL && *home == '/') {
    n = snprintf(out, cap, "%s/.cache/ltvfs", home);
  } else {
    const char *tmp = getenv("TMPDIR");
    n = snprintf(out, cap, "%s/ltvfs-%ld", tmp && *tmp ? tmp : "/tmp", (long)getuid());
  }
  if (n < 0 || (size_t)n >= cap)
    return ltx_error_set(err, LTX_ERR_ARG, "cache directory '%.40s...' is too long", out);
  return LTX_OK;
}

int vfs_config_read(vfs_param_fn uri, void *ctx, vfs_config *c, ltx_error *err) {
  const char *v;
  memset(c, 0, sizeof(*c));
  c->time_ms = -1;
  c->rc.poll_ms = DEFAULT_POLL_MS;
  c->rc.cache_bytes = DEFAULT_CACHE_BYTES;
  c->rc.open_timeout_ms = DEFAULT_OPEN_TIMEOUT_MS;
  c->rc.prefetch_max = DEFAULT_PREFETCH_MAX;

  c->url = param(uri, ctx, "replica", "LITESTREAM_REPLICA_URL");
  if (c->url == NULL)
    return ltx_error_set(err, STORE_ERR_URL,
                         "no replica URL: add replica=URL to the file: URI or set "
                         "LITESTREAM_REPLICA_URL");
  if ((v = param(uri, ctx, "txid", NULL)) != NULL && ltx_txid_parse(v, &c->txid) != 0)
    return ltx_error_set(err, LTX_ERR_ARG, "txid=%s: not a non-zero hex TXID", v);
  if ((v = param(uri, ctx, "time", NULL)) != NULL) {
    c->time_ms = ltx_time_parse(v);
    if (c->time_ms < 0)
      return ltx_error_set(err, LTX_ERR_ARG,
                           "time=%s: not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)", v);
    if (c->txid)
      return ltx_error_set(err, LTX_ERR_ARG, "txid= and time= cannot both pin the view");
  }
  if ((v = param(uri, ctx, "poll", "LITESTREAM_POLL_INTERVAL")) != NULL) {
    long ms = vfs_parse_duration_ms(v);
    if (ms < 10 || ms > 86400000L)
      return ltx_error_set(err, LTX_ERR_ARG,
                           "poll=%s: not an interval between 10 ms and 1 day (ms, or 1s, 500ms)", v);
    c->rc.poll_ms = (int)ms;
  }
  if ((v = param(uri, ctx, "cache_size", "LTVFS_CACHE_SIZE")) != NULL) {
    long long n = vfs_parse_size(v);
    if (n < 0)
      return ltx_error_set(err, LTX_ERR_ARG, "cache_size=%s: not a size (bytes, or 64M, 1G)", v);
    c->rc.cache_bytes = (size_t)n;
  }
  if ((v = param(uri, ctx, "prefetch_max", "LTVFS_PREFETCH_MAX")) != NULL) {
    long long n = vfs_parse_size(v);
    if (n < 0)
      return ltx_error_set(err, LTX_ERR_ARG, "prefetch_max=%s: not a size (bytes, or 4M)", v);
    c->rc.prefetch_max = (size_t)n;
  }
  if ((v = param(uri, ctx, "open_timeout", "LTVFS_OPEN_TIMEOUT")) != NULL) {
    long ms = vfs_parse_duration_ms(v);
    if (ms < 0 || ms > 86400000L)
      return ltx_error_set(err, LTX_ERR_ARG, "open_timeout=%s: not a duration (ms, or 10s)", v);
    c->rc.open_timeout_ms = (int)ms;
  }
  if ((v = param(uri, ctx, "cache_max", "LTVFS_CACHE_MAX")) != NULL) {
    long long n = vfs_parse_size(v);
    if (n < 0)
      return ltx_error_set(err, LTX_ERR_ARG, "cache_max=%s: not a size (bytes, or 512M, 10G)", v);
    c->rc.cache_max = (uint64_t)n;
  }
  c->rc.hydrate = 1;
  if ((v = param(uri, ctx, "hydrate", "LITESTREAM_HYDRATION_ENABLED")) != NULL) {
    int b = parse_bool(v);
    if (b < 0)
      return ltx_error_set(err, LTX_ERR_ARG, "hydrate=%s: not a boolean (1/0, true/false)", v);
    c->rc.hydrate = b;
  }
  c->rc.cache_dir = c->cache_root;
  return vfs_cache_root(uri, ctx, c->cache_root, sizeof(c->cache_root), err);
}

/* ---- the primary VFS ("litestream-primary") ---- */

int vfs_primary_config_read(vfs_param_fn uri, void *ctx, int bootstrap_restore, primary_config *c,
                            ltx_error *err) {
  const char *v;
  memset(c, 0, sizeof(*c));
  c->sync_interval_ms = PRIMARY_DEFAULT_SYNC_INTERVAL_MS;
  c->spool_max = PRIMARY_DEFAULT_SPOOL_MAX;
  c->lease_ttl_ms = PRIMARY_DEFAULT_LEASE_TTL_MS;
  c->close_timeout_ms = PRIMARY_DEFAULT_CLOSE_TIMEOUT_MS;
  c->commit_timeout_ms = PRIMARY_DEFAULT_COMMIT_TIMEOUT_MS;

  c->replica_url = param(uri, ctx, "replica", "LITESTREAM_REPLICA_URL");
  if (c->replica_url == NULL)
    return ltx_error_set(err, STORE_ERR_URL,
                         "no replica URL: add replica=URL to the file: URI or set "
                         "LITESTREAM_REPLICA_URL");
  if ((v = param(uri, ctx, "sync_interval", "LITESTREAM_SYNC_INTERVAL")) != NULL) {
    long ms = vfs_parse_duration_ms(v);
    if (ms < 0 || ms > 3600000L)
      return ltx_error_set(err, LTX_ERR_ARG,
                           "sync_interval=%s: not an interval between 0 and 1 h (ms, or 1s)", v);
    c->sync_interval_ms = ms;
  }
  if ((v = param(uri, ctx, "sync", "LTVFS_SYNC")) != NULL) {
    if (!strcasecmp(v, "remote")) c->sync_remote = 1;
    else if (strcasecmp(v, "local") != 0)
      return ltx_error_set(err, LTX_ERR_ARG, "sync=%s: 'remote' or 'local'", v);
  }
  if ((v = param(uri, ctx, "spool_max", "LTVFS_SPOOL_MAX")) != NULL) {
    long long n = vfs_parse_size(v);
    if (n <= 0)
      return ltx_error_set(err, LTX_ERR_ARG, "spool_max=%s: not a size (bytes, or 512M, 1G)", v);
    c->spool_max = (uint64_t)n;
  }
  if ((v = param(uri, ctx, "spool", "LTVFS_SPOOL_DIR")) != NULL) c->spool_dir = v;
  c->bootstrap_restore = bootstrap_restore;
  if ((v = param(uri, ctx, "bootstrap", "LTVFS_BOOTSTRAP")) != NULL) {
    if (!strcasecmp(v, "restore")) c->bootstrap_restore = 1;
    else if (strcasecmp(v, "none") != 0)
      return ltx_error_set(err, LTX_ERR_ARG, "bootstrap=%s: 'restore' or 'none'", v);
  }
  if ((v = param(uri, ctx, "lease_ttl", "LTVFS_LEASE_TTL")) != NULL) {
    long ms = vfs_parse_duration_ms(v);
    if (ms < 1000 || ms > 86400000L)
      return ltx_error_set(err, LTX_ERR_ARG, "lease_ttl=%s: not a duration of 1 s to 1 day", v);
    c->lease_ttl_ms = ms;
  }
  if ((v = param(uri, ctx, "lease_renew", "LTVFS_LEASE_RENEW")) != NULL) {
    long ms = vfs_parse_duration_ms(v);
    if (ms < 100 || ms >= c->lease_ttl_ms)
      return ltx_error_set(err, LTX_ERR_ARG, "lease_renew=%s: not a duration under lease_ttl", v);
    c->lease_renew_ms = ms;
  }
  if ((v = param(uri, ctx, "close_timeout", "LTVFS_CLOSE_TIMEOUT")) != NULL) {
    long ms = vfs_parse_duration_ms(v);
    if (ms < 0 || ms > 86400000L)
      return ltx_error_set(err, LTX_ERR_ARG, "close_timeout=%s: not a duration (ms, or 10s)", v);
    c->close_timeout_ms = ms ? ms : 1;
  }
  if ((v = param(uri, ctx, "commit_timeout", "LTVFS_COMMIT_TIMEOUT")) != NULL) {
    long ms = vfs_parse_duration_ms(v);
    if (ms <= 0 || ms > 86400000L)
      return ltx_error_set(err, LTX_ERR_ARG, "commit_timeout=%s: not a duration (ms, or 30s)", v);
    c->commit_timeout_ms = ms;
  }
  return LTX_OK;
}

/* ---- the Go VFS's write mode on "litestream" ---- */

int vfs_write_mode(void) {
  const char *v = getenv("LITESTREAM_WRITE_ENABLED");
  return v != NULL && parse_bool(v) == 1;
}

int vfs_write_mode_db_path(char *out, size_t cap, ltx_error *err) {
  const char *url = getenv("LITESTREAM_REPLICA_URL"), *buffer = getenv("LITESTREAM_BUFFER_PATH");
  char dir[2048], root[1024];
  int n;
  if (url == NULL || *url == '\0')
    return ltx_error_set(err, STORE_ERR_URL,
                         "LITESTREAM_WRITE_ENABLED needs LITESTREAM_REPLICA_URL (the replica written)");
  if (buffer != NULL && *buffer) {
    n = snprintf(out, cap, "%s.ltvfs.db", buffer);
  } else {
    if (vfs_cache_root(NULL, NULL, root, sizeof root, err) != LTX_OK) return err->code;
    if (root[0] == '\0')
      return ltx_error_set(err, LTX_ERR_ARG,
                           "LITESTREAM_WRITE_ENABLED with LITESTREAM_CACHE_DIR=off: set "
                           "LITESTREAM_BUFFER_PATH to say where the local database lives");
    if (cache_image_dir(root, url, dir, sizeof dir) != 0)
      return ltx_error_set(err, LTX_ERR_ARG, "cache directory for %s is too long", url);
    n = snprintf(out, cap, "%s.primary.db", dir);
  }
  if (n < 0 || (size_t)n >= cap) return ltx_error_set(err, LTX_ERR_ARG, "local database path too long");
  return LTX_OK;
}
