/*
** lease.c: the replica's lock.json, which keeps one primary host writing it.
**
** The object, at the replica root (S3: PATH/lock.json; file://: DIR/lock.json):
**   {"owner":"<spool id>","generation":7,"expires":"2026-12-02T10:00:30.5Z","expires_ms":1796205630500}
** Created with put-if-absent, renewed and taken over with put-if-match on
** the etag read, so two hosts racing for it cannot both win: exactly one
** conditional put succeeds. The owner is the spool's identity, not a
** process: the processes of one host share a spool and its lease (the one
** holding the spool's upload lock renews it).
**
** A lease whose expiry has passed may be taken over (generation + 1). The
** holder stops uploading when a renewal is refused (the etag moved: someone
** took it) and when its own expiry passes without a renewal (it cannot
** know whether someone else took it meanwhile).
*/
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "primary/primary_int.h"

#define LEASE_KEY "lock.json"
#define LEASE_MAX_BYTES 4096

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The string value of "key" in a flat JSON object into out; 0 if absent. */
static int json_string(const char *json, const char *key, char *out, size_t cap) {
  char pat[64];
  const char *p, *end;
  snprintf(pat, sizeof pat, "\"%s\":\"", key);
  p = strstr(json, pat);
  if (p == NULL) return 0;
  p += strlen(pat);
  end = strchr(p, '"');
  if (end == NULL || (size_t)(end - p) >= cap) return 0;
  memcpy(out, p, (size_t)(end - p));
  out[end - p] = '\0';
  return 1;
}

static int json_int(const char *json, const char *key, int64_t *out) {
  char pat[64];
  const char *p;
  snprintf(pat, sizeof pat, "\"%s\":", key);
  p = strstr(json, pat);
  if (p == NULL) return 0;
  *out = strtoll(p + strlen(pat), NULL, 10);
  return 1;
}

static int put_lease(store *st, lease *l, store_put_cond cond, const char *etag, ltx_error *err) {
  char body[512], when[LTX_TIME_CAP], new_etag[STORE_ETAG_CAP];
  int n, rc;
  ltx_time_format(l->expires_ms, when, sizeof when);
  n = snprintf(body, sizeof body,
               "{\"owner\":\"%s\",\"generation\":%" PRIu64 ",\"expires\":\"%s\",\"expires_ms\":%" PRId64 "}\n",
               l->owner, l->generation, when, l->expires_ms);
  rc = store_put(st, LEASE_KEY, (const uint8_t *)body, (size_t)n, -1, cond, etag, new_etag,
                 sizeof new_etag, err);
  if (rc == LTX_OK) snprintf(l->etag, sizeof l->etag, "%s", new_etag);
  return rc;
}

int lease_acquire(store *st, lease *l, const char *owner, long ttl_ms, ltx_error *err) {
  int rc = LTX_OK;
  for (int attempt = 0; attempt < 5; attempt++) {
    char etag[STORE_ETAG_CAP], buf[LEASE_MAX_BYTES + 1], holder[64] = "";
    uint64_t size = 0;
    size_t nread = 0;
    int64_t gen = 0, expires = 0;

    snprintf(l->owner, sizeof l->owner, "%s", owner);
    rc = store_head(st, LEASE_KEY, &size, etag, sizeof etag, err);
    if (rc == STORE_ERR_NOT_FOUND) {
      l->generation = 1;
      l->expires_ms = now_ms() + ttl_ms;
      rc = put_lease(st, l, STORE_PUT_IF_ABSENT, NULL, err);
      if (rc == STORE_ERR_PRECONDITION) continue; /* created meanwhile: look again */
      if (rc == LTX_OK) l->held = 1;
      return rc;
    }
    if (rc != LTX_OK) return rc;
    rc = store_read_suffix(st, LEASE_KEY, (uint8_t *)buf, LEASE_MAX_BYTES, &nread, &size, err);
    if (rc == STORE_ERR_NOT_FOUND) continue;
    if (rc != LTX_OK) return rc;
    buf[nread] = '\0';
    json_string(buf, "owner", holder, sizeof holder);
    json_int(buf, "generation", &gen);
    json_int(buf, "expires_ms", &expires);
    if (strcmp(holder, owner) != 0 && expires > now_ms()) {
      char when[LTX_TIME_CAP];
      ltx_time_format(expires, when, sizeof when);
      return ltx_error_set(err, PRIMARY_ERR_LEASE,
                           "the replica's lease (%s) is held by %s until %s (generation %" PRId64
                           "): another primary writes this replica",
                           LEASE_KEY, holder[0] ? holder : "(unnamed)", when, gen);
    }
    /* Ours already (a restart of this host), or expired: take it. */
    l->generation = (uint64_t)gen + (strcmp(holder, owner) != 0 ? 1 : 0);
    if (l->generation == 0) l->generation = 1;
    l->expires_ms = now_ms() + ttl_ms;
    rc = put_lease(st, l, STORE_PUT_IF_MATCH, etag, err);
    if (rc == STORE_ERR_PRECONDITION) continue; /* changed between the read and the put */
    if (rc == LTX_OK) l->held = 1;
    return rc;
  }
  return ltx_error_set(err, PRIMARY_ERR_LEASE,
                       "the replica's lease (%s) keeps changing: another primary is taking it",
                       LEASE_KEY);
}

int lease_renew(store *st, lease *l, long ttl_ms, ltx_error *err) {
  lease next = *l;
  int rc;
  next.expires_ms = now_ms() + ttl_ms;
  rc = put_lease(st, &next, STORE_PUT_IF_MATCH, l->etag, err);
  if (rc == STORE_ERR_PRECONDITION) {
    l->held = 0;
    return ltx_error_set(err, PRIMARY_ERR_LEASE,
                         "lost the replica's lease (%s): it was replaced behind this primary "
                         "(another primary took over); uploads stopped", LEASE_KEY);
  }
  if (rc == LTX_OK) *l = next;
  return rc;
}

void lease_release(store *st, lease *l) {
  ltx_error err;
  if (!l->held) return;
  l->expires_ms = now_ms() - 1;
  put_lease(st, l, STORE_PUT_IF_MATCH, l->etag, &err);
  l->held = 0;
}
