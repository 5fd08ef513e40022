#!/bin/bash
# bench/bench_hydrate.sh: the local image. One replica of a ~110 MB database
# (a snapshot from `ltvfs import`, then INCS incremental files) on the
# loopback S3 server behind the fault proxy (which counts requests and can
# delay each by LAT_MS ms). One invocation, same machine:
#
#   1. time to fully hydrated, requests, bytes, peak RSS (ours and the
#      limit: ROUNDS alternating rounds after a warm-up GET, each side's
#      median reported; this VM's runs vary by +-20%):
#      ours  `ltvfs hydrate`, and the VFS hydrating in the background of an
#            application (Python's sqlite3) that has run its first query;
#      peer  the Go VFS with LITESTREAM_HYDRATION_ENABLED=true, polled with
#            PRAGMA litestream_hydration_progress until 100 (bounded by
#            PEER_BUDGET s; an unfinished run is extrapolated from its
#            progress and marked "~");
#      limit the physical limit measured in the same run: the larger of a
#            raw parallel GET of the same objects (curl, SigV4, 8 MiB ranges,
#            8 at a time) and writing + fsyncing as many bytes locally;
#   2. after hydration, a full scan and WARM_Q random point queries through
#      the VFS (served from the image, default cache_size) beside plain
#      sqlite3 on a restored copy;
#   3. a warm restart: open to the first query, and the requests it made;
#   4. memory of a cold full scan (a fresh process, an empty cache, the
#      defaults: image on, hydration on) through our VFS and through the Go
#      VFS (hydration off, its default), peak RSS, on this replica and on one
#      of a database ROWS2 rows large (~2x): ours should stay flat as the
#      database grows. The Go VFS reads a page per request and is stopped
#      after SCAN_BUDGET s: its RSS then is that of a partial scan (it grows
#      with the pages read), its progress is the requests it made.
# Everything over s3:// loopback, then hydration again with +LAT_MS ms per
# request. Prints markdown tables. Needs what check.sh installs, curl and
# /usr/bin/time. ~6 minutes on 2 cores. Environment: ROWS (250000), INCS (3),
# LAT_MS (20), PEER_BUDGET (60), WARM_Q (100000), ROWS2 (2 x ROWS),
# SCAN_BUDGET (30), ROUNDS (3), KEEP=1 keeps the scratch.
set -euo pipefail
srcdir=$(cd "$(dirname "$0")/.." && pwd)
top_builddir=${top_builddir:-$srcdir}
LTVFS=$top_builddir/tools/ltvfs
LIB=$top_builddir/.libs/libltvfs.so
GOVFS=${LTVFS_GO_VFS:-$srcdir/.npm-deps/node_modules/litestream-vfs-linux-amd64/litestream-vfs.so}
ROWS=${ROWS:-250000}
INCS=${INCS:-3}
LAT_MS=${LAT_MS:-20}
PEER_BUDGET=${PEER_BUDGET:-60}
WARM_Q=${WARM_Q:-100000} # (20000 took ~18 ms: the timer's 1 ms was 5% of it)
ROWS2=${ROWS2:-$((2 * ROWS))}
SCAN_BUDGET=${SCAN_BUDGET:-30}
ROUNDS=${ROUNDS:-3}
W=$top_builddir/tests/tmp/bench_hydrate
rm -rf "$W"
mkdir -p "$W"
for need in curl /usr/bin/time /usr/bin/python3 sqlite3; do
  command -v "$need" >/dev/null || { echo "bench_hydrate: needs $need"; exit 77; }
done
. "$srcdir/tests/s3/env.sh"
s3_env_start >/dev/null
trap 's3_env_stop; [ "${KEEP:-0}" = 1 ] || rm -rf "$W"' EXIT
now_ms() { echo $(($(date +%s%N) / 1000000)); }
fault() { s3_fault "$@" >/dev/null; }
requests() { curl -fsS "$S3_FAULT_URL/stats" | sed -E 's/.*"requests":([0-9]+).*/\1/'; }
reset_stats() { curl -fsS "$S3_FAULT_URL/reset-stats" >/dev/null; }

# ---- the database and its replica: a snapshot and INCS incremental files ----
DB=$W/app.db
REP=$W/replica
sqlite3 "$DB" "PRAGMA page_size = 4096;
  CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, payload BLOB);
  WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $ROWS)
  INSERT INTO t SELECT i, printf('k%08d', i), randomblob(400) FROM s;
  CREATE INDEX t_k ON t(k);" >/dev/null
"$LTVFS" import "$DB" "file://$REP" >/dev/null
for i in $(seq 1 "$INCS"); do
  cp "$DB" "$W/prev.db"
  sqlite3 "$DB" "UPDATE t SET payload = randomblob(400) WHERE id % 97 = $i;" >/dev/null
  "$top_builddir/tests/ltx_diffgen" "$W/prev.db" "$DB" "file://$REP" "$(printf '%x' $((i + 1)))" >/dev/null
done
rm -f "$W/prev.db"
URL="s3://$S3_BUCKET/bench?endpoint=$S3_PROXY_ENDPOINT"
"$top_builddir/tests/replica_copy" "file://$REP" "s3://$S3_BUCKET/bench?endpoint=$S3_ENDPOINT" >/dev/null
"$LTVFS" restore "$URL" -o "$W/restored.db" -q -f
DB_BYTES=$(stat -c %s "$W/restored.db")
NOBJ=$(find "$REP" -name '*.ltx' | wc -l)

# A second, larger replica (one snapshot) for the memory of a cold scan.
DB2=$W/app2.db
sqlite3 "$DB2" "PRAGMA page_size = 4096;
  CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, payload BLOB);
  WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $ROWS2)
  INSERT INTO t SELECT i, printf('k%08d', i), randomblob(400) FROM s;
  CREATE INDEX t_k ON t(k);" >/dev/null
"$LTVFS" import "$DB2" "file://$W/replica2" >/dev/null
"$top_builddir/tests/replica_copy" "file://$W/replica2" "s3://$S3_BUCKET/bench2?endpoint=$S3_ENDPOINT" >/dev/null
URL2="s3://$S3_BUCKET/bench2?endpoint=$S3_PROXY_ENDPOINT"
DB2_BYTES=$(stat -c %s "$DB2")
rm -f "$DB2"

# ---- the physical limit ----
# GET every object of the replica (the data a hydration must fetch) with
# curl, SigV4-signed, 8 MiB ranges, 8 in flight; and write + fsync that
# many bytes locally.
list_objects() { # level name size, from the file:// copy of the replica
  find "$REP/ltx" -name '*.ltx' -printf '%h %f %s\n' | while read -r dir name size; do
    echo "${dir##*/} ${name%.ltx} $size"
  done
}
raw_get() {
  local jobs=$W/ranges
  : >"$jobs"
  while read -r level name size; do
    local key
    key=$(printf 'bench/%04x/%s.ltx' "$level" "$name")
    for ((off = 0; off < size; off += 8388608)); do
      echo "$key $off $((off + 8388607 < size - 1 ? off + 8388607 : size - 1))" >>"$jobs"
    done
  done < <(list_objects)
  xargs -P 8 -L 1 sh -c 'curl -fsS --aws-sigv4 "aws:amz:us-east-1:s3" --user S3RVER:S3RVER \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -r "$1-$2" -o /dev/null "'"$S3_PROXY_ENDPOINT/$S3_BUCKET"'/$0"' <"$jobs"
}
limit() { # prints ms of max(raw GET, local write + fsync)
  local t0 t1 t2 t3 mb
  t0=$(now_ms)
  raw_get
  t1=$(now_ms)
  mb=$(((DB_BYTES + 1048575) / 1048576))
  t2=$(now_ms)
  dd if=/dev/zero of="$W/limit.img" bs=1M count="$mb" conv=fsync status=none
  t3=$(now_ms)
  rm -f "$W/limit.img"
  echo "$((t1 - t0)) $((t3 - t2))"
}

# ---- ours: ltvfs hydrate ----
ours_hydrate() { # prints ms requests rss_mb
  local cache=$W/cache-$1 t0 t1
  rm -rf "$cache"
  reset_stats
  t0=$(now_ms)
  /usr/bin/time -f '%M' -o "$W/rss" "$LTVFS" hydrate "$URL" --cache-dir "$cache" -q >"$W/hyd.out"
  t1=$(now_ms)
  echo "$((t1 - t0)) $(requests) $(awk '{ printf "%.1f", $1 / 1024 }' "$W/rss")"
}

# ---- ours in an application: the VFS hydrating in the background ----
# A fresh process (Python's sqlite3, as an application) opens the replica
# through the VFS, runs its first query and polls the hydration progress
# every 2 ms; the time is from process start to 100%. Unlike `ltvfs
# hydrate` it has no early pass (the application's first queries come
# first) and, until its reads have been quiet 50 ms, one fill worker.
ours_vfs_hydrate() { # prints ms requests rss_mb
  local cache=$W/vcache-$1 t0 t1
  rm -rf "$cache"
  reset_stats
  t0=$(now_ms)
  LITESTREAM_CACHE_DIR=$cache /usr/bin/time -f '%M' -o "$W/rss" /usr/bin/python3 - "$LIB" \
    "file:app?vfs=litestream&replica=$(printf '%s' "$URL" | sed 's/&/%26/g')" <<'PY'
import sqlite3, sys, time
boot = sqlite3.connect(':memory:')
boot.enable_load_extension(True)
boot.load_extension(sys.argv[1])
db = sqlite3.connect(sys.argv[2], uri=True)
db.execute('SELECT count(*) FROM sqlite_master').fetchall()
while int(db.execute('PRAGMA litestream_hydration_progress').fetchone()[0]) != 100:
    time.sleep(0.002)
PY
  t1=$(now_ms)
  echo "$((t1 - t0)) $(requests) $(awk '{ printf "%.1f", $1 / 1024 }' "$W/rss")"
}

# ---- the peer: the Go VFS hydrating ----
peer_hydrate() { # prints ms requests rss_mb done(1/0) progress
  local t0 t1 p=0 rc=0
  rm -f "$W/go-hydrated.db"*
  reset_stats
  t0=$(now_ms)
  {
    printf '.load %s\n.open file:x.db?vfs=litestream\nSELECT count(*) FROM sqlite_master;\n' "$GOVFS"
    for _ in $(seq 1 $((PEER_BUDGET * 5))); do
      echo "PRAGMA litestream_hydration_progress;"
      echo ".shell sleep 0.2"
    done
  } | (cd "$W" && env -u AWS_CA_BUNDLE LITESTREAM_REPLICA_URL="$URL" LITESTREAM_LOG_FILE="$W/go.log" \
      LITESTREAM_HYDRATION_ENABLED=true LITESTREAM_HYDRATION_PATH="$W/go-hydrated.db" \
      /usr/bin/time -f '%M' -o "$W/rss" timeout $((PEER_BUDGET + 30)) sqlite3 -batch 2>&1) |
    while read -r line; do
      case $line in
        100) echo "$(now_ms) 100" >"$W/peer.done"; pkill -f "go-hydrated.db" 2>/dev/null || true ;;
        [0-9]|[0-9][0-9]) echo "$(now_ms) $line" >"$W/peer.progress" ;;
      esac
    done || rc=$?
  t1=$(now_ms)
  if [ -s "$W/peer.done" ]; then
    read -r tdone p <"$W/peer.done"
    echo "$((tdone - t0)) $(requests) $(awk '{ printf "%.1f", $1 / 1024 }' "$W/rss" 2>/dev/null || echo ?) 1 100"
  else
    p=0
    [ -s "$W/peer.progress" ] && read -r _ p <"$W/peer.progress"
    echo "$((t1 - t0)) $(requests) $(awk '{ printf "%.1f", $1 / 1024 }' "$W/rss" 2>/dev/null || echo ?) 0 $p"
  fi
  rm -f "$W/peer.done" "$W/peer.progress"
}

# ---- after hydration: scans and point queries against plain sqlite3 ----
SCAN_Q="SELECT count(*), sum(length(payload)) FROM t;"
point_sql() { # WARM_Q point queries by id, a fixed sequence, as one statement
  awk -v n="$WARM_Q" -v rows="$ROWS" 'BEGIN { x = 12345; printf "SELECT sum(length(payload)) FROM t WHERE id IN ("; for (i = 0; i < n; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "%s%d", i ? "," : "", 1 + x % rows }; print ");" }'
}
# min_run: the smallest "Run Time: real" of sqlite3's .timer, in ms
min_run() { awk '/^Run Time: real/ { ms = $4 * 1000; if (min == "" || ms < min) min = ms } END { printf "%d", min }'; }
time_sql() { # URI CACHE_DIR SQL-file -> ms: the query alone, best of 5 in one process
  { printf ".load %s\n.open '%s'\n.timer on\n" "$LIB" "$1"; cat "$3" "$3" "$3" "$3" "$3"; } |
    LITESTREAM_CACHE_DIR=$2 sqlite3 -batch :memory: | min_run
}
time_plain() { # DB SQL-file -> ms, the same way
  { printf '.timer on\n'; cat "$2" "$2" "$2" "$2" "$2"; } | sqlite3 -batch "$1" | min_run
}

# ROUNDS alternating rounds of the limit and ours, after one raw GET that
# warms the server up (node's first requests after a start are slow, which
# flattered the limit); each side's median round is the one reported, and
# all rounds are printed. The peer runs once (it takes minutes).
median_of() { # lines "ms ..." on stdin -> the line of the median ms
  sort -n | awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }'
}
limit_and_ours() { # cache-name -> "lim_get lim_write" line, then "ms req rss" lines: CLI, VFS
  local lims=$W/lims.$1 ours=$W/ours.$1 vfs=$W/vfs.$1 i
  : >"$lims"
  : >"$ours"
  : >"$vfs"
  raw_get
  for i in $(seq 1 "$ROUNDS"); do
    limit >>"$lims"
    ours_hydrate "$1" >>"$ours"
    ours_vfs_hydrate "$1" >>"$vfs"
  done
  echo "rounds ($1): limit $(cut -d' ' -f1 "$lims" | tr '\n' ' ')ms; ours $(cut -d' ' -f1 "$ours" | tr '\n' ' ')ms; VFS $(cut -d' ' -f1 "$vfs" | tr '\n' ' ')ms" >&2
  median_of <"$lims"
  median_of <"$ours"
  median_of <"$vfs"
}
fault none
{ read -r lim_get lim_write; read -r o_ms o_req o_rss; read -r v_ms v_req v_rss; } < <(limit_and_ours lo 2>>"$W/rounds")
read -r p_ms p_req p_rss p_done p_prog <<<"$(peer_hydrate)"
fault latency "ms=$LAT_MS"
{ read -r lim_get_lat _; read -r ol_ms ol_req ol_rss; read -r vl_ms vl_req vl_rss; } < <(limit_and_ours lat 2>>"$W/rounds")
read -r pl_ms pl_req pl_rss pl_done pl_prog <<<"$(PEER_BUDGET=$((PEER_BUDGET / 2)) peer_hydrate)"
fault none

VFS_URI="file:app?vfs=litestream&replica=$(printf '%s' "$URL" | sed 's/&/%26/g')"
echo "$SCAN_Q" >"$W/scan.sql"
point_sql >"$W/points.sql"
s_ours=$(time_sql "$VFS_URI" "$W/cache-lo" "$W/scan.sql")
s_plain=$(time_plain "$W/restored.db" "$W/scan.sql")
q_ours=$(time_sql "$VFS_URI" "$W/cache-lo" "$W/points.sql")
q_plain=$(time_plain "$W/restored.db" "$W/points.sql")
reset_stats
t0=$(now_ms)
first=$(LITESTREAM_CACHE_DIR=$W/cache-lo sqlite3 -batch -cmd ".load $LIB" ":memory:" ".open '$VFS_URI'" \
  "SELECT length(payload) FROM t WHERE id = 4242;")
warm_ms=$(($(now_ms) - t0))
warm_req=$(requests)
want_first=$(sqlite3 "$W/restored.db" "SELECT length(payload) FROM t WHERE id = 4242;")

# ---- memory of a cold full scan: ours (defaults, empty cache) and the Go VFS ----
rss_of() { awk '/^[0-9]+$/ { v = $1 } END { printf "%.1f", v / 1024 }' "$1"; }
ours_scan_rss() { # URL -> ms rss_mb requests right(1/0)
  local uri cache=$W/cache-scan t0 t1 out
  uri="file:app?vfs=litestream&replica=$(printf '%s' "$1" | sed 's/&/%26/g')"
  rm -rf "$cache"
  reset_stats
  t0=$(now_ms)
  out=$(LITESTREAM_CACHE_DIR=$cache /usr/bin/time -f '%M' -o "$W/rss" sqlite3 -batch :memory: \
    ".load $LIB" ".open '$uri'" "SELECT count(*) FROM t WHERE length(payload) = 400;")
  t1=$(now_ms)
  echo "$((t1 - t0)) $(rss_of "$W/rss") $(requests) $out"
}
peer_scan_rss() { # URL -> ms rss_mb requests rows(or -)
  local t0 t1 out
  reset_stats
  t0=$(now_ms)
  out=$(cd "$W" && env -u AWS_CA_BUNDLE LITESTREAM_REPLICA_URL="$1" LITESTREAM_LOG_FILE="$W/go-scan.log" \
    /usr/bin/time -f '%M' -o "$W/rss" timeout "$SCAN_BUDGET" sqlite3 -batch :memory: \
    ".load $GOVFS" ".open file:x.db?vfs=litestream" "SELECT count(*) FROM t WHERE length(payload) = 400;" \
    2>/dev/null) || true
  t1=$(now_ms)
  echo "$((t1 - t0)) $(rss_of "$W/rss") $(requests) ${out:--}"
}
read -r so1_ms so1_rss so1_req so1_rows <<<"$(ours_scan_rss "$URL")"
read -r sp1_ms sp1_rss sp1_req sp1_rows <<<"$(peer_scan_rss "$URL")"
read -r so2_ms so2_rss so2_req so2_rows <<<"$(ours_scan_rss "$URL2")"
read -r sp2_ms sp2_rss sp2_req sp2_rows <<<"$(peer_scan_rss "$URL2")"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
mx() { [ "$1" -gt "$2" ] && echo "$1" || echo "$2"; }
fmt_peer() { if [ "$4" = 1 ]; then echo "$1 ms"; else awk -v ms="$1" -v p="$5" 'BEGIN { if (p > 0) printf "~%d ms (%d%% in %d ms)", ms * 100 / p, p, ms; else printf ">%d ms (0%%)", ms }'; fi; }
L=$(mx "$lim_get" "$lim_write")
LL=$(mx "$lim_get_lat" "$lim_write")
echo
echo "bench_hydrate: $((DB_BYTES / 1048576)) MiB database ($((DB_BYTES / 4096)) pages), $NOBJ LTX objects; S3 loopback (s3rver behind the fault proxy); limit and ours: the median of $ROUNDS alternating rounds after a warm-up GET, the peer once"
sed 's/^/  /' "$W/rounds"
echo
echo "| hydration | time to fully hydrated | requests | peak RSS (MB) | vs the limit |"
echo "|---|---:|---:|---:|---:|"
echo "| physical limit, loopback: max(raw parallel GET $lim_get ms, write+fsync $lim_write ms) | $L ms | | | 1.00 |"
echo "| ours (ltvfs hydrate), loopback | $o_ms ms | $o_req | $o_rss | $(ratio "$o_ms" "$L") |"
echo "| ours, the VFS in the background (an application's first query, then 100%), loopback | $v_ms ms | $v_req | $v_rss | $(ratio "$v_ms" "$L") |"
echo "| Go VFS, loopback | $(fmt_peer "$p_ms" "$p_req" "$p_rss" "$p_done" "$p_prog") | $p_req | $p_rss | |"
echo "| physical limit, +$LAT_MS ms/request | $LL ms | | | 1.00 |"
echo "| ours, +$LAT_MS ms/request | $ol_ms ms | $ol_req | $ol_rss | $(ratio "$ol_ms" "$LL") |"
echo "| ours, the VFS in the background, +$LAT_MS ms/request | $vl_ms ms | $vl_req | $vl_rss | $(ratio "$vl_ms" "$LL") |"
echo "| Go VFS, +$LAT_MS ms/request | $(fmt_peer "$pl_ms" "$pl_req" "$pl_rss" "$pl_done" "$pl_prog") | $pl_req | $pl_rss | |"
echo
echo "| after hydration (default cache_size; the query alone, best of 5 in one process) | ours (VFS, from the image) | plain sqlite3 (restored copy) | ours / plain speed |"
echo "|---|---:|---:|---:|"
echo "| full scan ($SCAN_Q) | $s_ours ms | $s_plain ms | $(ratio "$s_plain" "$s_ours") |"
echo "| $WARM_Q point lookups (one IN (...) query) | $q_ours ms | $q_plain ms | $(ratio "$q_plain" "$q_ours") |"
echo
echo "| warm restart | open + first point query | requests | answer right |"
echo "|---|---:|---:|---|"
echo "| ours, from the image | $warm_ms ms (process start included) | $warm_req (LISTs: the catch-up poll and the check that the replica is the one cached) | $([ "$first" = "$want_first" ] && echo yes || echo NO) |"
echo
echo "| cold full scan, fresh process, empty cache (SELECT count(*) ... over every row) | ours: time, requests | ours peak RSS (MB) | Go VFS: time, requests | Go VFS peak RSS (MB) | ours / Go RSS |"
echo "|---|---:|---:|---:|---:|---:|"
scan_row() { # label db_bytes pages ours_ms ours_rss ours_req ours_rows peer_ms peer_rss peer_req peer_rows want_rows
  local peer_t
  if [ "${11}" = "${12}" ]; then peer_t="$8 ms, ${10}"; else
    peer_t=$(awk -v ms="$8" -v rq="${10}" -v pages="$3" 'BEGIN { printf "stopped after %d ms, %d requests (~%d%% of the pages)", ms, rq, rq * 100 / pages }'); fi
  echo "| $1: $(($2 / 1048576)) MiB | $4 ms, $6$([ "$7" = "${12}" ] || echo ' (WRONG COUNT)') | $5 | $peer_t | $9 | $(ratio "$5" "$9") |"
}
scan_row "this replica" "$DB_BYTES" $((DB_BYTES / 4096)) "$so1_ms" "$so1_rss" "$so1_req" "$so1_rows" "$sp1_ms" "$sp1_rss" "$sp1_req" "$sp1_rows" "$ROWS"
scan_row "ROWS2 = $ROWS2 rows" "$DB2_BYTES" $((DB2_BYTES / 4096)) "$so2_ms" "$so2_rss" "$so2_req" "$so2_rows" "$sp2_ms" "$sp2_rss" "$sp2_req" "$sp2_rows" "$ROWS2"
