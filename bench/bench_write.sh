#!/bin/bash
# bench/bench_write.sh: the write-side VFS "litestream-primary" beside plain
# SQLite, one run, same machine, same disk. Prints markdown tables:
#
#   1. commit throughput and p50/p99 commit latency of small transactions
#      (one 100-byte INSERT, autocommit, WAL mode) at synchronous=NORMAL and
#      FULL: plain SQLite, and litestream-primary with the default 1 s
#      batching into a file:// replica on the same disk and into s3://
#      loopback (target: >= 0.9x plain);
#   2. sync=remote over s3:// loopback: each commit returns once the file
#      holding it is in the bucket (its latency is one PUT);
#   3. PUTs and bytes uploaded per commit over s3:// (from the fault proxy's
#      request count and the bucket's objects);
#   4. end-to-end replication lag: a commit on the primary until a replica
#      process (litestream VFS, poll=100ms) sees it, p50/p99, over s3://, at
#      the default batching and with sync_interval=0.
# The driver is bench/bench_write.c, compiled here against the system SQLite.
# Environment: N_NORMAL (20000), N_FULL (2000), N_REMOTE (300), LAG_N (60),
# KEEP=1 keeps the scratch directory. About a minute on 2 cores.
set -euo pipefail
srcdir=$(cd "$(dirname "$0")/.." && pwd)
top_builddir=${top_builddir:-$srcdir}
LIB=${LTVFS_LIB:-$top_builddir/.libs/libltvfs.so}
LTVFS=${LTVFS:-$top_builddir/tools/ltvfs}
CC=${CC:-cc}
N_NORMAL=${N_NORMAL:-20000}
N_FULL=${N_FULL:-2000}
N_REMOTE=${N_REMOTE:-300}
LAG_N=${LAG_N:-60}
W=$top_builddir/tests/tmp/bench_write
rm -rf "$W"
mkdir -p "$W"
BW=$W/bench_write
"$CC" -std=c11 -O2 -Wall -Wextra -D_GNU_SOURCE -o "$BW" "$srcdir/bench/bench_write.c" -lsqlite3
. "$srcdir/tests/s3/env.sh"
s3_env_start >/dev/null
trap 's3_env_stop; [ "${KEEP:-0}" = 1 ] || rm -rf "$W"' EXIT
export LITESTREAM_LOG_FILE=$W/ltvfs.log
requests() { curl -fsS "$S3_FAULT_URL/stats" | sed -E 's/.*"requests":([0-9]+).*/\1/'; }
reset_stats() { curl -fsS "$S3_FAULT_URL/reset-stats" >/dev/null; }
field() { head -1 <<<"$2" | sed -E "s/.* $1 ([0-9.]+).*/\\1/"; }
s3url() { echo "s3://$S3_BUCKET/$1?endpoint=$S3_PROXY_ENDPOINT"; }
uri_esc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe="/:"))' "$1"; }

echo "## litestream-primary beside plain SQLite (WAL mode, one 100-byte INSERT per commit)"
echo
echo "| synchronous | side | commits | commits/s | p50 µs | p99 µs | ratio to plain |"
echo "|---|---|---:|---:|---:|---:|---:|"
for sync in NORMAL FULL; do
  if [ $sync = NORMAL ]; then n=$N_NORMAL; else n=$N_FULL; fi
  out=$("$BW" commit "$LIB" "$W/plain-$sync.db" "$n" $sync "")
  plain=$(field per_sec "$out")
  printf '| %s | plain SQLite | %d | %s | %s | %s | 1.00 |\n' $sync "$n" "$plain" "$(field p50_us "$out")" "$(field p99_us "$out")"
  out=$("$BW" commit "$LIB" "$W/prim-$sync.db" "$n" $sync "replica=file://$W/rep-$sync")
  r=$(field per_sec "$out")
  printf '| %s | primary, file:// replica | %d | %s | %s | %s | %.2f |\n' $sync "$n" "$r" "$(field p50_us "$out")" \
    "$(field p99_us "$out")" "$(echo "$r / $plain" | bc -l)"
  reset_stats
  out=$("$BW" commit "$LIB" "$W/prims3-$sync.db" "$n" $sync "replica=$(uri_esc "$(s3url "w-$sync")")")
  r=$(field per_sec "$out")
  printf '| %s | primary, s3:// loopback | %d | %s | %s | %s | %.2f |\n' $sync "$n" "$r" "$(field p50_us "$out")" \
    "$(field p99_us "$out")" "$(echo "$r / $plain" | bc -l)"
  reqs=$(requests)
  objs=$("$LTVFS" ls "$(s3url "w-$sync")" 2>/dev/null | awk '$1 ~ /^[0-9]+$/ { n++ } END { print n + 0 }')
  bytes=$(sed -n 's/.*"bytes_uploaded":\([0-9]*\).*/\1/p' <<<"$out")
  eval "S3_REQS_$sync=$reqs S3_OBJS_$sync=$objs S3_BYTES_$sync=$bytes S3_N_$sync=$n"
done
echo

echo "## Uploads per commit over s3:// (default 1 s batching)"
echo
echo "| synchronous | commits | LTX files | requests in all | requests per commit | LTX bytes per commit |"
echo "|---|---:|---:|---:|---:|---:|"
for sync in NORMAL FULL; do
  eval "reqs=\$S3_REQS_$sync objs=\$S3_OBJS_$sync bytes=\$S3_BYTES_$sync n=\$S3_N_$sync"
  printf '| %s | %d | %d | %d | %.4f | %s |\n' $sync "$n" "$objs" "$reqs" "$(echo "$reqs / $n" | bc -l)" \
    "$(if [ -n "$bytes" ] && [ "$bytes" -gt 0 ]; then echo $((bytes / n)); else echo n/a; fi)"
done
echo

echo "## sync=remote over s3:// loopback (each commit waits for its upload)"
echo
echo "| synchronous | commits | commits/s | p50 µs | p99 µs |"
echo "|---|---:|---:|---:|---:|"
out=$("$BW" commit "$LIB" "$W/remote.db" "$N_REMOTE" FULL "replica=$(uri_esc "$(s3url remote)")&sync=remote&sync_interval=0")
printf '| FULL | %d | %s | %s | %s |\n' "$N_REMOTE" "$(field per_sec "$out")" "$(field p50_us "$out")" "$(field p99_us "$out")"
echo

echo "## Replication lag over s3:// loopback (commit on the primary -> seen by a replica process polling every 100 ms)"
echo
echo "| batching | commits | p50 ms | p99 ms |"
echo "|---|---:|---:|---:|"
for si in 1s 0; do
  name=lag-$si
  # The replica exists (the table, uploaded) before the reader opens it.
  "$BW" lag-writer "$LIB" "$W/$name.db" 0 10 "replica=$(uri_esc "$(s3url "$name")")&sync_interval=$si" >/dev/null
  "$BW" lag-reader "$LIB" "$(uri_esc "$(s3url "$name")")" "$LAG_N" 100 >"$W/$name.seen" &
  reader=$!
  "$BW" lag-writer "$LIB" "$W/$name.db" "$LAG_N" 50 "replica=$(uri_esc "$(s3url "$name")")&sync_interval=$si" |
    grep -v ready >"$W/$name.commits"
  wait $reader || true
  python3 - "$W/$name.commits" "$W/$name.seen" "$si" <<'PYEOF'
import sys
c = dict(map(int, l.split()) for l in open(sys.argv[1]))
s = dict(map(int, l.split()) for l in open(sys.argv[2]))
lags = sorted((s[i] - c[i]) / 1000.0 for i in c if i in s)
if not lags:
    print("| %s | 0 | n/a | n/a |" % sys.argv[3]); sys.exit(0)
p = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
print("| sync_interval=%s | %d | %.0f | %.0f |" % (sys.argv[3], len(lags), p(0.5), p(0.99)))
PYEOF
done
