#!/bin/bash
# bench/bench_s3.sh: `ltvfs restore` of a >= 50 MB database from file:// and
# from the loopback S3 server (tests/s3/env.sh), best of 3, as a markdown
# table: | source | wall s | MB/s | requests | bytes read |.
#
# The replica: `ltvfs import` of a ~60 MB database (200k rows of random hex
# text plus an index) as a snapshot, then NINC small incremental L0 files
# made with tests/ltx_diffgen; copied to S3 with tests/replica_copy. The S3
# restore goes through the fault proxy (pass-through), whose request counter
# gives the number of S3 requests; the target is O(files + size / 8 MiB), not
# O(pages). "bytes read" is the sum of read()/recv() results of the process
# (strace, one extra untimed run; "n/a" without strace).
#
# Run from the build directory (needs tools/ltvfs, tests/replica_copy,
# tests/ltx_diffgen, sqlite3, node). Environment: ROWS (200000), NINC (20).
set -euo pipefail

srcdir=${top_srcdir:-${srcdir:-$(cd "$(dirname "$0")/.." && pwd)}}
top_builddir=${top_builddir:-.}
LTVFS=${LTVFS:-$top_builddir/tools/ltvfs}
REPLICA_COPY=${REPLICA_COPY:-$top_builddir/tests/replica_copy}
LTX_DIFFGEN=${LTX_DIFFGEN:-$top_builddir/tests/ltx_diffgen}
SQLITE3=${SQLITE3:-sqlite3}
ROWS=${ROWS:-200000}
NINC=${NINC:-20}
WORK=$top_builddir/tests/tmp/bench_s3
rm -rf "$WORK"
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
for p in "$LTVFS" "$REPLICA_COPY" "$LTX_DIFFGEN"; do
  [ -x "$p" ] || { echo "bench_s3: $p not built" >&2; exit 1; }
done
. "$srcdir/tests/s3/env.sh"

log() { echo "# $*" >&2; }

# ---- the database and its replica ----
DB=$WORK/big.db
PREV=$WORK/prev.db
REP=$WORK/replica
log "building a database of $ROWS rows"
"$SQLITE3" -batch "$DB" >/dev/null <<SQL
PRAGMA journal_mode = DELETE;
CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v TEXT);
INSERT INTO t SELECT value, hex(randomblob(8)), hex(randomblob(120)) FROM generate_series(1, $ROWS);
CREATE INDEX t_k ON t(k);
SQL
"$LTVFS" import "$DB" "file://$REP" >/dev/null
for i in $(seq 1 "$NINC"); do
  cp "$DB" "$PREV"
  "$SQLITE3" -batch "$DB" "UPDATE t SET v = hex(randomblob(120)) WHERE id % 5000 = $i;
    INSERT INTO t(k, v) SELECT hex(randomblob(8)), hex(randomblob(120)) FROM generate_series(1, 50);"
  "$LTX_DIFFGEN" "$PREV" "$DB" "file://$REP" "$(printf '%x' $((i + 1)))" >/dev/null
done
rm -f "$PREV"
DBSIZE=$(stat -c %s "$DB")
NFILES=$(find "$REP" -name '*.ltx' | wc -l)
REPSIZE=$(find "$REP" -name '*.ltx' -printf '%s\n' | awk '{ s += $1 } END { print s }')
log "database $DBSIZE bytes; replica $NFILES files, $REPSIZE bytes"

s3_env_start
URL_S3="s3://$S3_BUCKET/bench?endpoint=$S3_ENDPOINT"
URL_PROXY="s3://$S3_BUCKET/bench?endpoint=$S3_PROXY_ENDPOINT"
"$REPLICA_COPY" "file://$REP" "$URL_S3" >/dev/null

# best_of_3 URL: prints the best wall time in seconds.
best_of_3() {
  local best= t0 t1 t i
  for i in 1 2 3; do
    rm -f "$WORK/out.db"
    t0=$(date +%s%N)
    "$LTVFS" restore "$1" -o "$WORK/out.db" -f -q >/dev/null
    t1=$(date +%s%N)
    t=$(((t1 - t0) / 1000))
    if [ -z "$best" ] || [ "$t" -lt "$best" ]; then best=$t; fi
  done
  awk -v u="$best" 'BEGIN { printf "%.3f", u / 1e6 }'
}
# bytes_read URL: sum of read/recv results of one restore (strace).
bytes_read() {
  if ! command -v strace >/dev/null 2>&1; then echo n/a; return; fi
  rm -f "$WORK/out.db"
  strace -f -qq -e trace=read,pread64,readv,preadv,recvfrom,recvmsg -o "$WORK/strace.txt" \
    "$LTVFS" restore "$1" -o "$WORK/out.db" -f -q >/dev/null 2>&1 || { echo n/a; return; }
  awk '/= [0-9]+$/ { s += $NF } END { print s + 0 }' "$WORK/strace.txt"
}
stats_requests() { curl -fsS "$S3_FAULT_URL/stats" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p'; }

log "timing restores"
T_FILE=$(best_of_3 "file://$REP")
B_FILE=$(bytes_read "file://$REP")
want=$(awk -F'\t' 'NR == 1' <(printf '%s\n' "$("$SQLITE3" -batch "$DB" 'SELECT count(*), sum(id) FROM t;')"))
got=$("$SQLITE3" -batch "$WORK/out.db" 'SELECT count(*), sum(id) FROM t;')
[ "$got" == "$want" ] || { echo "bench_s3: file:// restore differs: $got vs $want" >&2; exit 1; }

T_S3=$(best_of_3 "$URL_S3")
curl -fsS "$S3_FAULT_URL/reset-stats" >/dev/null
rm -f "$WORK/out.db"
"$LTVFS" restore "$URL_PROXY" -o "$WORK/out.db" -f -q >/dev/null
REQ_S3=$(stats_requests)
got=$("$SQLITE3" -batch "$WORK/out.db" 'SELECT count(*), sum(id) FROM t;')
[ "$got" == "$want" ] || { echo "bench_s3: s3:// restore differs: $got vs $want" >&2; exit 1; }
B_S3=$(bytes_read "$URL_S3")
s3_env_stop

MB=$(awk -v s="$DBSIZE" 'BEGIN { printf "%.1f", s / 1048576 }')
TARGET=$((NFILES + (REPSIZE + 8388607) / 8388608))
mbs() { awk -v s="$DBSIZE" -v t="$1" 'BEGIN { printf "%.1f", s / 1048576 / t }'; }
echo
echo "Restore of a $MB MiB database ($DBSIZE bytes) from $NFILES LTX files ($REPSIZE bytes; 1 snapshot + $NINC L0), best of 3; MB/s = database MiB / wall s."
echo
echo "| source | wall s | MB/s | requests | bytes read |"
echo "|---|---:|---:|---:|---:|"
echo "| file:// | $T_FILE | $(mbs "$T_FILE") | - | $B_FILE |"
echo "| s3:// (loopback s3rver) | $T_S3 | $(mbs "$T_S3") | $REQ_S3 | $B_S3 |"
echo
echo "S3 requests: $REQ_S3 (files + ceil(replica size / 8 MiB) = $NFILES + $((TARGET - NFILES)) = $TARGET; pages: $((DBSIZE / 4096)))."
echo "bytes read: sum of read/recv syscall results of one untimed restore (strace), HTTP headers included for s3://."
