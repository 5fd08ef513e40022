/*
** plan.c: the restore planner (docs/restore-plan.md). Pure: a listing in, the
** files to apply in order out. No I/O.
**
** The rule: start from the newest level-9 snapshot with max <= N, then
** repeatedly take a file with min <= current+1 and max > current (max <= N
** when pinned), preferring the highest max, then the lowest min, then the
** higher level, until no file extends the state.
**
** How this file implements it, and the decisions on the edges:
**
**  - Steps 1 and 2 are one greedy loop starting at current = 0, over all
**    levels including 9. At current = 0 the candidates are exactly the files
**    with min = 1, i.e. the snapshots, and the preference order picks the one
**    with the highest max, a level-9 file on a tie: that is step 1's "newest
**    snapshot". Including level 9 afterwards changes nothing for a well-formed
**    replica, because every other snapshot ends at or below the chosen one.
**    Where it differs it is better: an L1 file [1, 50] beside an L9 snapshot
**    [1, 40] is one file to apply instead of two, reaching the same TXID.
**  - Greedy by furthest reach is optimal here: a file usable from a lower
**    current is usable from a higher one unless it ends below it. So the loop
**    reaches the highest reachable TXID with the fewest files, and a pinned N
**    is reached exactly whenever any chain reaches it.
**  - Files sorted by min make the loop one pass: each round scans the files
**    that became usable (min <= current+1) and keeps the best; the others all
**    end at or below the best one's max, so they can never extend the state
**    again and are dropped. O(n log n) for the sort, O(n) after.
**  - Entries that cannot be LTX files are ignored: min = 0, max < min, level
**    outside 0..9. Duplicates are harmless (either copy will do).
**  - Latest: a gap before the newest file is STORE_ERR_NONCONTIGUOUS naming
**    the TXID reached and the first file after the gap (lowest min among
**    the files beyond; on a tie the one reaching furthest, then higher level).
**  - Pinned N: only files with max <= N count; not reaching N exactly is
**    STORE_ERR_TXID_UNAVAILABLE naming the nearest available TXIDs below and
**    above N (store_plan_available_txids).
**  - Time T: only files whose timestamp is strictly before T count, and the
**    plan reaches the newest TXID those files can restore, as Litestream's
**    restore does. A gap among them is not an error: the state before T that
**    can be restored is well defined, and files pruned by retention make the
**    exact state at T unknowable anyway. No file before T, or none of them a
**    snapshot, is STORE_ERR_TXID_UNAVAILABLE. Time and TXID combine (both
**    filters apply).
*/
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store.h"

/* An entry that can be an LTX file at all (docs/ltx-format.md and 2). */
static int is_valid(const store_ltx_file *f) {
  return f->min_txid != 0 && f->max_txid >= f->min_txid && f->level >= 0 &&
         f->level <= STORE_MAX_LEVEL;
}

/* Usable under the targets: (1) valid, (2) before the time, (3) not past the
** pinned TXID. */
static int is_usable(const store_ltx_file *f, uint64_t pin, int64_t time_ms) {
  return is_valid(f) && (time_ms < 0 || f->timestamp_ms < time_ms) &&
         (pin == 0 || f->max_txid <= pin);
}

/* f can follow a state at TXID cur: min <= cur+1, written so it cannot
** overflow (min >= 1 for valid files). */
static int extends_from(const store_ltx_file *f, uint64_t cur) {
  return f->min_txid - 1 <= cur && f->max_txid > cur;
}

/* docs/restore-plan.md's preference: highest max, lowest min, higher level. */
static int is_better(const store_ltx_file *a, const store_ltx_file *b) {
  if (a->max_txid != b->max_txid) return a->max_txid > b->max_txid;
  if (a->min_txid != b->min_txid) return a->min_txid < b->min_txid;
  return a->level > b->level;
}

const store_ltx_file *store_plan_next(const store_ltx_file *files, size_t n, uint64_t txid,
                                      const unsigned char *skip) {
  const store_ltx_file *best = NULL;
  for (size_t i = 0; i < n; i++) {
    if ((skip != NULL && skip[i]) || !is_valid(&files[i]) || !extends_from(&files[i], txid))
      continue;
    if (best == NULL || is_better(&files[i], best)) best = &files[i];
  }
  return best;
}

static int cmp_min(const void *pa, const void *pb) {
  const store_ltx_file *a = pa, *b = pb;
  if (a->min_txid != b->min_txid) return a->min_txid < b->min_txid ? -1 : 1;
  if (a->max_txid != b->max_txid) return a->max_txid < b->max_txid ? -1 : 1;
  return (a->level > b->level) - (a->level < b->level);
}

static int cmp_max(const void *pa, const void *pb) {
  const store_ltx_file *a = pa, *b = pb;
  if (a->max_txid != b->max_txid) return a->max_txid < b->max_txid ? -1 : 1;
  if (a->min_txid != b->min_txid) return a->min_txid < b->min_txid ? -1 : 1;
  return (a->level > b->level) - (a->level < b->level);
}

/* The usable files, copied into a new array (*out, may be NULL if none). */
static int collect(const store_ltx_file *files, size_t n, uint64_t pin, int64_t time_ms,
                   store_ltx_file **out, size_t *n_out, ltx_error *err) {
  store_ltx_file *a = NULL;
  size_t m = 0;

  *out = NULL;
  *n_out = 0;
  if (n == 0) return LTX_OK;
  a = malloc(n * sizeof(*a));
  if (a == NULL) return ltx_error_set(err, LTX_ERR_NOMEM, "out of memory planning %zu files", n);
  for (size_t i = 0; i < n; i++) {
    if (is_usable(&files[i], pin, time_ms)) a[m++] = files[i];
  }
  *out = a;
  *n_out = m;
  return LTX_OK;
}

/* The greedy chain over a (sorted here by min). Fills out when non-NULL
** (out->files must hold n entries) and returns the TXID reached. */
static uint64_t greedy(store_ltx_file *a, size_t n, store_plan *out) {
  uint64_t cur = 0;
  size_t i = 0;

  if (n > 1) qsort(a, n, sizeof(a[0]), cmp_min);
  for (;;) {
    const store_ltx_file *best = NULL;
    for (; i < n && a[i].min_txid - 1 <= cur; i++) {
      if (extends_from(&a[i], cur) && (best == NULL || is_better(&a[i], best))) best = &a[i];
    }
    if (best == NULL) break;
    if (out != NULL) out->files[out->n++] = *best;
    cur = best->max_txid;
  }
  return cur;
}

/* TXIDs where a usable file ends exactly and a chain gets there. Sweeping
** the distinct max values upwards, the reach under "max <= t" jumps to t
** exactly when some file ending at t starts at or below reach+1 (anything
** ending earlier was already counted in the reach before t). */
static int available(const store_ltx_file *files, size_t n, int64_t time_ms, uint64_t **txids_out,
                     size_t *n_out, ltx_error *err) {
  store_ltx_file *a = NULL;
  uint64_t *txids = NULL;
  size_t m = 0, n_txids = 0;
  uint64_t cur = 0;
  int rc;

  *txids_out = NULL;
  *n_out = 0;
  rc = collect(files, n, 0, time_ms, &a, &m, err);
  if (rc != LTX_OK || m == 0) goto out;
  txids = malloc(m * sizeof(*txids));
  if (txids == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory listing available TXIDs");
    goto out;
  }
  qsort(a, m, sizeof(a[0]), cmp_max);
  for (size_t i = 0; i < m;) {
    uint64_t t = a[i].max_txid;
    int reached = 0;
    for (; i < m && a[i].max_txid == t; i++) {
      if (a[i].min_txid - 1 <= cur) reached = 1;
    }
    if (reached) {
      cur = t;
      txids[n_txids++] = t;
    }
  }
  *txids_out = txids;
  *n_out = n_txids;
  txids = NULL;
out:
  free(a);
  free(txids);
  return rc;
}

int store_plan_available_txids(const store_ltx_file *files, size_t n, uint64_t **txids,
                               size_t *n_txids, ltx_error *err) {
  return available(files, n, -1, txids, n_txids, err);
}


/* "level L <name>" of a file, for messages. */
static const char *describe(const store_ltx_file *f, char *buf, size_t cap) {
  char name[64];
  snprintf(buf, cap, "level %d file %s", f->level, ltx_file_name(f->min_txid, f->max_txid, name));
  return buf;
}

/* Latest state with a gap: name the TXID reached and the first file after
** the gap. Every file ending beyond reach starts beyond reach+1 here. */
static int gap_error(const store_ltx_file *a, size_t n, uint64_t reach, ltx_error *err) {
  const store_ltx_file *first = NULL;
  char file_desc[128];

  for (size_t i = 0; i < n; i++) {
    const store_ltx_file *f = &a[i];
    if (f->max_txid <= reach) continue;
    if (first == NULL || f->min_txid < first->min_txid ||
        (f->min_txid == first->min_txid && is_better(f, first))) {
      first = f;
    }
  }
  describe(first, file_desc, sizeof(file_desc));
  if (reach == 0) {
    return ltx_error_set(err, STORE_ERR_NONCONTIGUOUS,
                         "replica is non-contiguous: no snapshot (no file starts at TXID "
                         "0000000000000001); the earliest file is %s",
                         file_desc);
  }
  return ltx_error_set(err, STORE_ERR_NONCONTIGUOUS,
                       "replica is non-contiguous: the files reach TXID %016" PRIx64
                       ", then %s starts at TXID %016" PRIx64 " (TXIDs %016" PRIx64 "..%016" PRIx64
                       " are missing)",
                       reach, file_desc, first->min_txid, reach + 1, first->min_txid - 1);
}

/* Pinned N not reached: name the nearest TXIDs that are available. */
static int unavailable_error(const store_ltx_file *files, size_t n, uint64_t pin,
                             int64_t time_ms, ltx_error *err) {
  uint64_t *txids = NULL;
  size_t n_txids = 0, i;
  char below[40] = "none", above[40] = "none", before_text[96] = "";
  int rc = available(files, n, time_ms, &txids, &n_txids, err);

  if (rc != LTX_OK) goto out;
  /* first available TXID >= pin; it is not pin itself, or the plan would
  ** have reached it */
  for (i = 0; i < n_txids && txids[i] < pin; i++) {
  }
  if (i > 0) snprintf(below, sizeof(below), "%016" PRIx64, txids[i - 1]);
  if (i < n_txids) snprintf(above, sizeof(above), "%016" PRIx64, txids[i]);
  if (time_ms >= 0) {
    char time_text[80];
    snprintf(before_text, sizeof(before_text), " before %s",
             ltx_time_format(time_ms, time_text, sizeof(time_text)));
  }
  rc = ltx_error_set(err, STORE_ERR_TXID_UNAVAILABLE,
                     "transaction %016" PRIx64 " is not available%s: nearest available "
                     "TXIDs are %s below and %s above",
                     pin, before_text, below, above);
out:
  free(txids);
  return rc;
}

int store_plan_build(const store_ltx_file *files, size_t n, uint64_t target_txid,
                     int64_t target_time_ms, store_plan *out, ltx_error *err) {
  store_ltx_file *a = NULL;
  size_t m = 0, n_valid = 0;
  int64_t oldest_ms = INT64_MAX;
  uint64_t newest = 0, reach;
  int rc;

  memset(out, 0, sizeof(*out));
  for (size_t i = 0; i < n; i++) {
    if (!is_valid(&files[i])) continue;
    n_valid++;
    if (files[i].timestamp_ms < oldest_ms) oldest_ms = files[i].timestamp_ms;
  }
  if (n_valid == 0) {
    rc = n == 0 ? ltx_error_set(err, STORE_ERR_EMPTY, "replica holds no LTX files")
                : ltx_error_set(err, STORE_ERR_EMPTY,
                                "replica holds no valid LTX files (%zu entries ignored)", n);
    goto out;
  }
  rc = collect(files, n, target_txid, target_time_ms, &a, &m, err);
  if (rc != LTX_OK) goto out;
  if (m == 0 && target_time_ms >= 0 && oldest_ms >= target_time_ms) {
    char target_text[80], oldest_text[80];
    rc = ltx_error_set(err, STORE_ERR_TXID_UNAVAILABLE,
                       "no LTX file is older than %s (the oldest is from %s)",
                       ltx_time_format(target_time_ms, target_text, sizeof(target_text)),
                       ltx_time_format(oldest_ms, oldest_text, sizeof(oldest_text)));
    goto out;
  }
  for (size_t i = 0; i < m; i++) {
    if (a[i].max_txid > newest) newest = a[i].max_txid;
  }
  out->files = malloc((m ? m : 1) * sizeof(*out->files));
  if (out->files == NULL) {
    rc = ltx_error_set(err, LTX_ERR_NOMEM, "out of memory planning %zu files", m);
    goto out;
  }
  reach = greedy(a, m, out);

  if (target_txid != 0) {
    /* (1) pinned: exactly N or nothing (docs/restore-plan.md, step 3) */
    if (reach != target_txid) rc = unavailable_error(files, n, target_txid, target_time_ms, err);
  } else if (target_time_ms >= 0) {
    /* (2) by time: the newest restorable state before it; see the header */
    if (reach == 0) {
      char target_text[80];
      rc = ltx_error_set(err, STORE_ERR_TXID_UNAVAILABLE,
                         "no restorable state before %s: none of the %zu files before it is "
                         "a snapshot (min TXID 1)",
                         ltx_time_format(target_time_ms, target_text, sizeof(target_text)), m);
    }
  } else if (reach < newest) {
    /* (3) latest: a gap before the newest file */
    rc = gap_error(a, m, reach, err);
  }
  if (rc != LTX_OK) goto out;
  out->txid = reach;
out:
  if (rc != LTX_OK) store_plan_free(out);
  free(a);
  return rc;
}
