#!/bin/bash
# bench/bench_read.sh: the read path, ltvfs ("ours": `.load libltvfs`, VFS
# "litestream") against the Litestream Go VFS ("peer": npm
# litestream-vfs-linux-amd64, `.load litestream-vfs.so`, hydration off,
# always run with `env -u AWS_CA_BUNDLE`), on one replica of a ~53 MB
# database, from three sources:
#   file://     the replica directory;
#   s3://       the loopback S3 server (tests/s3/env.sh) through the fault
#               proxy, whose /__fault/stats counts the requests;
#   s3:// +lat  the same with the proxy delaying every request by LAT_MS ms.
# Measures (each a markdown table with ours, peer and their ratio):
#   1. extension load time: sqlite3_load_extension() of each .so into a
#      :memory: connection, median of LOAD_RUNS fresh processes;
#   2. open to first point query: sqlite3_open_v2() + prepare + one
#      `SELECT id, payload FROM t WHERE id = ?` (schema read included), median
#      of POINT_RUNS fresh processes, and the S3 requests of such a process;
#   3. cold full scan: a fresh process steps through
#      `SELECT id, length(payload) FROM t` (every leaf page of t): wall time
#      from open to the last row, S3 requests, peak RSS (/usr/bin/time %M);
#      ours: median of SCAN_RUNS; peer: one run, bounded by PEER_SCAN_BUDGET
#      seconds (PEER_LAT_BUDGET with latency), an incomplete scan is
#      extrapolated linearly to all rows and marked "~";
#   4. warm point queries: WARM_N random point queries (fixed xorshift
#      sequence) as a warm-up, then the same WARM_N ids WARM_PASSES times,
#      timed, in one process, each query its own read transaction; queries/s
#      and the ratio to plain sqlite3 on a local copy (`ltvfs restore` of the
#      replica), opened normally (the target's reference) and with
#      ?immutable=1 (no locks or change checks: the upper bound), median of
#      WARM_RUNS processes (the peer: PEER_WARM_BUDGET s per phase, one run
#      over s3://). Ours runs with LTVFS_CACHE_SIZE=WARM_CACHE so that the
#      database fits its page cache (the default 32M does not).
# Every side is driven by the same C program (bench/bench_read_q.c, compiled
# here with gcc -lsqlite3): same statements, same SQLite, the extension
# loaded with sqlite3_load_extension(). Results are checked (row count and
# payload sum of the scan, payload length of the point query) against the
# local copy; a wrong answer is listed under "Errors" and fails the bench.
# Targets printed beside the numbers: cold scan over s3:// >= 10x faster than
# the peer with <= 1/20 of its requests, peak RSS <= 1/5 of the peer's, warm
# queries >= 0.9x plain sqlite3.
#
# Run from the build directory (needs libltvfs.so, tools/ltvfs,
# tests/ltx_diffgen, tests/replica_copy, gcc, sqlite3 with its header, node,
# curl, /usr/bin/time). Exit 0 when every measurement ran and answered
# correctly (targets missed or not), 1 otherwise, 77 when a prerequisite is
# missing. Environment: ROWS (200000), NINC (5), LAT_MS (20), LOAD_RUNS (7),
# POINT_RUNS (5), SCAN_RUNS (3), WARM_N (20000), WARM_PASSES (5), WARM_RUNS
# (3), WARM_CACHE (256M), PEER_SCAN_BUDGET (120), PEER_LAT_BUDGET (20),
# PEER_WARM_BUDGET (20), OURS (.libs/libltvfs.so), LTVFS_GO_VFS (the peer
# .so), SQLITE3, CC, KEEP (1: keep the scratch directory
# tests/tmp/bench_read after a successful run). About 3.5 minutes on 2 cores.
set -euo pipefail
# The read path over the network, as before the local image: ours runs with
# no disk cache (bench/bench_hydrate.sh measures the image).
export LITESTREAM_CACHE_DIR=off

srcdir=${top_srcdir:-${srcdir:-$(cd "$(dirname "$0")/.." && pwd)}}
top_builddir=${top_builddir:-.}
top_builddir=$(cd "$top_builddir" && pwd)
srcdir=$(cd "$srcdir" && pwd)
LTVFS=${LTVFS:-$top_builddir/tools/ltvfs}
REPLICA_COPY=${REPLICA_COPY:-$top_builddir/tests/replica_copy}
LTX_DIFFGEN=${LTX_DIFFGEN:-$top_builddir/tests/ltx_diffgen}
OURS=${OURS:-$top_builddir/.libs/libltvfs.so}
GOVFS=${LTVFS_GO_VFS:-$srcdir/.npm-deps/node_modules/litestream-vfs-linux-amd64/litestream-vfs.so}
SQLITE3=${SQLITE3:-sqlite3}
CC=${CC:-gcc}
ROWS=${ROWS:-200000}
NINC=${NINC:-5}
LAT_MS=${LAT_MS:-20}
LOAD_RUNS=${LOAD_RUNS:-7}
POINT_RUNS=${POINT_RUNS:-5}
SCAN_RUNS=${SCAN_RUNS:-3}
WARM_N=${WARM_N:-20000}
WARM_RUNS=${WARM_RUNS:-3}
WARM_PASSES=${WARM_PASSES:-5}
WARM_CACHE=${WARM_CACHE:-256M}
PEER_SCAN_BUDGET=${PEER_SCAN_BUDGET:-120}
PEER_LAT_BUDGET=${PEER_LAT_BUDGET:-20}
PEER_WARM_BUDGET=${PEER_WARM_BUDGET:-20}
WORK=$top_builddir/tests/tmp/bench_read

log() { echo "# $*" >&2; }
skip() {
  echo "bench_read: $*: skipping" >&2
  exit 77
}
command -v "$SQLITE3" >/dev/null 2>&1 || skip "no sqlite3 shell"
command -v "$CC" >/dev/null 2>&1 || skip "no C compiler ($CC)"
command -v node >/dev/null 2>&1 || skip "no node (for the loopback S3 server)"
command -v curl >/dev/null 2>&1 || skip "no curl"
[ -x /usr/bin/time ] || skip "no /usr/bin/time"
[ -f "$GOVFS" ] || skip "Litestream Go VFS not found at $GOVFS (run check.sh or set LTVFS_GO_VFS)"
[ -f "$OURS" ] || skip "$OURS not built"
for p in "$LTVFS" "$REPLICA_COPY" "$LTX_DIFFGEN"; do
  [ -x "$p" ] || skip "$p not built"
done
GOVFS=$(cd "$(dirname "$GOVFS")" && pwd)/$(basename "$GOVFS")
OURS=$(cd "$(dirname "$OURS")" && pwd)/$(basename "$OURS")

rm -rf "$WORK"
mkdir -p "$WORK/run"
WORK=$(cd "$WORK" && pwd)
BQ=$WORK/bench_read_q
"$CC" -std=c11 -O2 -Wall -Wextra -o "$BQ" "$srcdir/bench/bench_read_q.c" -lsqlite3 ||
  skip "cannot build bench_read_q (sqlite3.h / libsqlite3 missing?)"
. "$srcdir/tests/s3/env.sh"
T_START=$(date +%s)

# ---- the database, its replica, the local copy ----
DB=$WORK/big.db
PREV=$WORK/prev.db
REP=$WORK/replica
LOCAL=$WORK/local.db
log "building a database of $ROWS rows"
"$SQLITE3" -batch "$DB" >/dev/null <<SQL
PRAGMA journal_mode = DELETE;
CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, payload BLOB);
INSERT INTO t SELECT value, hex(randomblob(8)), randomblob(80 + abs(random()) % 241)
  FROM generate_series(1, $ROWS);
CREATE INDEX t_k ON t(k);
SQL
"$LTVFS" import "$DB" "file://$REP" >/dev/null
for i in $(seq 1 "$NINC"); do
  cp "$DB" "$PREV"
  "$SQLITE3" -batch "$DB" "UPDATE t SET payload = randomblob(200) WHERE id % 5000 = $i;
    INSERT INTO t(k, payload) SELECT hex(randomblob(8)), randomblob(200) FROM generate_series(1, 50);"
  "$LTX_DIFFGEN" "$PREV" "$DB" "file://$REP" "$(printf '%x' $((i + 1)))" >/dev/null
done
rm -f "$PREV"
"$LTVFS" restore "file://$REP" -o "$LOCAL" -f -q >/dev/null
cmp -s "$DB" "$LOCAL" || [ "$("$SQLITE3" "$DB" .dump | sha256sum)" == "$("$SQLITE3" "$LOCAL" .dump | sha256sum)" ] ||
  { echo "bench_read: the restored copy differs from the database" >&2; exit 1; }
rm -f "$DB"
DBSIZE=$(stat -c %s "$LOCAL")
PAGES=$("$SQLITE3" -batch "$LOCAL" 'PRAGMA page_count;')
PGSZ=$("$SQLITE3" -batch "$LOCAL" 'PRAGMA page_size;')
NFILES=$(find "$REP" -name '*.ltx' | wc -l)
REPSIZE=$(find "$REP" -name '*.ltx' -printf '%s\n' | awk '{ s += $1 } END { print s }')
IFS='|' read -r NROWS MAXID PSUM <<<"$("$SQLITE3" -batch "$LOCAL" 'SELECT count(*), max(id), sum(length(payload)) FROM t;')"
POINT_ID=$((MAXID / 2 + 7))
POINT_LEN=$("$SQLITE3" -batch "$LOCAL" "SELECT length(payload) FROM t WHERE id = $POINT_ID;")
log "database $DBSIZE bytes ($PAGES pages of $PGSZ, $NROWS rows); replica $NFILES files, $REPSIZE bytes"

s3_env_start
URL_FILE="file://$REP"
URL_S3="s3://$S3_BUCKET/bench?endpoint=$S3_PROXY_ENDPOINT"
"$REPLICA_COPY" "$URL_FILE" "s3://$S3_BUCKET/bench?endpoint=$S3_ENDPOINT" >/dev/null
fault() { s3_fault "$@" >/dev/null; }
proxy_requests() { curl -fsS "$S3_FAULT_URL/stats" | sed -n 's/.*"requests":\([0-9]*\).*/\1/p'; }

# ---- running one measurement ----
ERRORS=0
: >"$WORK/errors.txt"
# run_q SIDE SRC TIMEOUT MODE [ARGS...]: one fresh bench_read_q process.
#   SIDE: ours | peer | plain | immutable (plain with ?immutable=1); SRC:
#   file | s3 | lat (ignored for plain, immutable and mode load). The URI goes after MODE (none for load). Leaves the
#   key=value results in $WORK/out.txt (plus requests=N from the proxy for
#   s3/lat, maxrss_kb=N) and returns the exit status.
run_q() {
  local side=$1 src=$2 tmo=$3 mode=$4 url uri rc=0
  shift 4
  local -a x=() envs=() args=("$mode")
  case $src in
    file) url=$URL_FILE ;;
    *) url=$URL_S3 ;;
  esac
  uri="file:bench.db?vfs=litestream"
  envs=("LITESTREAM_REPLICA_URL=$url" "LITESTREAM_HYDRATION_ENABLED=false"
    "LITESTREAM_LOG_FILE=$WORK/$side.log")
  case $side in
    ours) x=(-x "$OURS") ;;
    peer) x=(-x "$GOVFS") ;;
    plain)
      uri=$LOCAL
      envs=()
      ;;
    immutable)
      uri="file:$LOCAL?immutable=1"
      envs=()
      ;;
  esac
  [ "$mode" == load ] || args+=("$uri")
  if [ "$src" != file ]; then curl -fsS "$S3_FAULT_URL/reset-stats" >/dev/null; fi
  rm -f "$WORK/time.txt"
  (cd "$WORK/run" && env -u AWS_CA_BUNDLE "${envs[@]}" "${RUN_ENV[@]}" \
    /usr/bin/time -f 'maxrss_kb=%M' -o "$WORK/time.txt" \
    timeout -k 5 "$tmo" "$BQ" "${x[@]}" "${args[@]}" "$@" >"$WORK/out.txt" 2>"$WORK/err.txt") || rc=$?
  if [ "$src" != file ] && [ "$mode" != load ]; then echo "requests=$(proxy_requests)" >>"$WORK/out.txt"; fi
  grep '^maxrss_kb=' "$WORK/time.txt" >>"$WORK/out.txt" 2>/dev/null || true
  if [ $rc -ne 0 ]; then
    ERRORS=$((ERRORS + 1))
    {
      echo "- $side $src $mode $*: exit $rc"
      head -5 "$WORK/err.txt" | sed 's/^/    /'
    } >>"$WORK/errors.txt"
    log "$side $src $mode failed (exit $rc)"
  fi
  return $rc
}
RUN_ENV=()
# get KEY: the value of KEY in $WORK/out.txt ("" when absent).
get() {
  local v
  v=$(grep -o "\\b$1=[^ ]*" "$WORK/out.txt" | head -1) || true
  echo "${v#*=}"
}
# The "requests" of ltvfs_stats() (ours), for file:// where no proxy counts.
stats_requests() { sed -n 's/^stats=.*"requests":\([0-9]*\).*/\1/p' "$WORK/out.txt" | head -1; }
median() { printf '%s\n' "$@" | { grep -v '^$' || true; } | sort -g | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)] }'; }
# fmt DIVISOR DECIMALS VALUE: VALUE / DIVISOR, or "ERR" when VALUE is empty.
fmt() { if [ -z "$3" ]; then echo ERR; else awk -v v="$3" -v d="$1" -v n="$2" 'BEGIN { printf "%.*f", n, v / d }'; fi; }
# ratio A B DECIMALS: A / B, or "-" when either is missing or B is 0.
ratio() { awk -v a="$1" -v b="$2" -v n="${3:-2}" 'BEGIN { num = "^[0-9]+([.][0-9]*)?([eE][-+]?[0-9]+)?$"
  if (a !~ num || b !~ num || b + 0 == 0) print "-"; else printf "%.*f", n, a / b }'; }
# meets A OP B: PASS when A OP B holds (numbers), MISS otherwise, "?" if missing.
meets() { awk -v a="$1" -v b="$3" -v op="$2" 'BEGIN { if (a == "" || a == "-" || b == "" || b == "-") { print "?"; exit }
  r = (op == ">=") ? (a + 0 >= b + 0) : (a + 0 <= b + 0); print r ? "PASS" : "MISS" }'; }
WRONG=0
# wrong WHAT: records a wrong answer.
wrong() {
  WRONG=$((WRONG + 1))
  echo "- wrong answer: $*" >>"$WORK/errors.txt"
  log "wrong answer: $*"
}
src_label() {
  case $1 in
    file) echo 'file://' ;;
    s3) echo 's3:// (loopback)' ;;
    lat) echo "s3:// +${LAT_MS} ms/request" ;;
  esac
}
set_source() {
  case $1 in
    lat) fault latency "ms=$LAT_MS" ;;
    *) fault none ;;
  esac
}

# ---- 1. extension load time ----
log "extension load time"
declare -A LOAD=()
for side in ours peer; do
  vals=()
  for i in $(seq 1 "$LOAD_RUNS"); do
    run_q "$side" file 60 load && vals+=("$(get load_us)") || true
  done
  LOAD[$side]=$(median "${vals[@]}")
done

# ---- 2. open to first point query ----
declare -A PT_US=() PT_REQ=()
for src in file s3 lat; do
  set_source "$src"
  for side in ours peer; do
    log "open + first point query: $side $src"
    us=() req=()
    for i in $(seq 1 "$POINT_RUNS"); do
      if run_q "$side" "$src" 60 point "$POINT_ID"; then
        [ "$(get len)" == "$POINT_LEN" ] || wrong "$side $src point query: payload length $(get len), want $POINT_LEN"
        us+=("$(get open_first_us)")
        if [ "$src" == file ]; then req+=("$(stats_requests)"); else req+=("$(get requests)"); fi
      fi
    done
    PT_US[$side.$src]=$(median "${us[@]}")
    PT_REQ[$side.$src]=$(median "${req[@]}")
  done
done
fault none

# ---- 3. cold full scan ----
declare -A SC_S=() SC_REQ=() SC_RSS=() SC_NOTE=()
# scan_once SIDE SRC BUDGET: one scan; appends to the arrays us/req/rss;
# sets FRAC (share of the rows scanned).
scan_once() {
  local side=$1 src=$2 budget=$3 tmo
  tmo=$(awk -v b="$budget" 'BEGIN { print (b > 0 ? int(b) + 60 : 120) }')
  FRAC=
  if [ "$budget" != 0 ]; then run_q "$side" "$src" "$tmo" scan "$budget" || return 0
  else run_q "$side" "$src" "$tmo" scan || return 0; fi
  local rows sum complete
  rows=$(get rows) sum=$(get sum) complete=$(get complete)
  if [ "$complete" == 1 ]; then
    [ "$rows|$sum" == "$NROWS|$PSUM" ] || wrong "$side $src scan: rows=$rows sum=$sum, want rows=$NROWS sum=$PSUM"
    FRAC=1
  else
    FRAC=$(awk -v r="$rows" -v n="$NROWS" 'BEGIN { printf "%.6f", r / n }')
  fi
  us+=("$(get us)")
  if [ "$src" == file ]; then req+=("$(stats_requests)"); else req+=("$(get requests)"); fi
  rss+=("$(get maxrss_kb)")
}
for src in file s3 lat; do
  set_source "$src"
  for side in ours peer; do
    us=() req=() rss=()
    if [ "$side" == ours ]; then
      log "cold scan: ours $src ($SCAN_RUNS runs)"
      for i in $(seq 1 "$SCAN_RUNS"); do scan_once ours "$src" 0; done
    else
      budget=$PEER_SCAN_BUDGET
      [ "$src" != lat ] || budget=$PEER_LAT_BUDGET
      log "cold scan: peer $src (1 run, at most $budget s)"
      scan_once peer "$src" "$budget"
    fi
    s=$(median "${us[@]}")
    r=$(median "${req[@]}")
    SC_RSS[$side.$src]=$(median "${rss[@]}")
    SC_NOTE[$side.$src]=
    if [ -n "$s" ] && [ -n "${FRAC:-}" ] && [ "$FRAC" != 1 ]; then
      # Incomplete (peer over budget): extrapolate to all rows.
      SC_NOTE[$side.$src]=$(awk -v f="$FRAC" -v s="$s" 'BEGIN { printf "%.1f%% of the rows in %.1f s", f * 100, s / 1e6 }')
      s=$(awk -v f="$FRAC" -v s="$s" 'BEGIN { printf "%.0f", s / f }')
      [ -z "$r" ] || r=$(awk -v f="$FRAC" -v r="$r" 'BEGIN { printf "%.0f", r / f }')
    fi
    SC_S[$side.$src]=$s
    SC_REQ[$side.$src]=$r
  done
done
fault none

# ---- 4. warm point queries ----
declare -A WM_QPS=() WM_NOTE=()
SEED=20251122
# warm SIDE SRC [BUDGET [RUNS]]
warm() {
  local side=$1 src=$2 budget=${3:-0} runs=${4:-$WARM_RUNS} q=() i
  log "warm point queries: $side $src ($runs runs of $WARM_N + $WARM_PASSES x $WARM_N)"
  for i in $(seq 1 "$runs"); do
    if run_q "$side" "$src" $((budget > 0 ? 2 * budget + 60 : 120)) warm "$WARM_N" "$MAXID" "$SEED" "$WARM_PASSES" "$budget"; then
      [ "$(get missing)" == 0 ] || [ "$(get complete)" != 1 ] ||
        wrong "$side $src warm: $(get missing) ids had no row"
      q+=("$(get qps)")
      [ "$(get complete)" == 1 ] || WM_NOTE[$side.$src]="stopped after $budget s: $(get queries) queries"
    fi
  done
  WM_QPS[$side.$src]=$(median "${q[@]}")
}
fault none
warm plain file
warm immutable file
RUN_ENV=("LTVFS_CACHE_SIZE=$WARM_CACHE")
warm ours file
warm ours s3
RUN_ENV=()
warm peer file "$PEER_WARM_BUDGET"
warm peer s3 "$PEER_WARM_BUDGET" 1
s3_env_stop
T_END=$(date +%s)

# ---- the tables ----
MIB=$(awk -v s="$DBSIZE" 'BEGIN { printf "%.1f", s / 1048576 }')
ms() { fmt 1000 1 "$1"; }
sec() { fmt 1000000 2 "$1"; }
mib() { fmt 1024 1 "$1"; }
echo
echo "Read benchmark: ours = libltvfs ($(basename "$OURS"), VFS litestream); peer = Litestream Go VFS ($(basename "$GOVFS"), hydration off)."
echo "Database: $MIB MiB ($PAGES pages of $PGSZ bytes, $NROWS rows; table t(id INTEGER PRIMARY KEY, k TEXT, payload BLOB of 80-320 bytes) + index on k)."
echo "Replica: $NFILES LTX files, $REPSIZE bytes (import snapshot + $NINC incremental files). S3: loopback s3rver behind the fault proxy, which counts requests; \"+${LAT_MS} ms\" = the proxy delays every request by ${LAT_MS} ms."
echo "Every number comes from a fresh process of bench_read_q (sqlite3_load_extension + sqlite3_open_v2 + prepared statements; SQLite $("$SQLITE3" -version | cut -d' ' -f1))."
echo
echo "### Extension load time (sqlite3_load_extension into :memory:, median of $LOAD_RUNS processes)"
echo
echo "| | ours | peer | ours/peer |"
echo "|---|---:|---:|---:|"
echo "| load ms | $(ms "${LOAD[ours]}") | $(ms "${LOAD[peer]}") | $(ratio "${LOAD[ours]}" "${LOAD[peer]}" 3) |"
echo
echo "### Open to first point query (open + SELECT ... WHERE id = $POINT_ID, median of $POINT_RUNS processes)"
echo
echo "| source | ours ms | peer ms | peer/ours (x faster) | ours requests | peer requests | ours/peer requests |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for src in file s3 lat; do
  o=${PT_US[ours.$src]} p=${PT_US[peer.$src]}
  orq=${PT_REQ[ours.$src]:-} prq=${PT_REQ[peer.$src]:-}
  [ "$src" != file ] || prq=n/a
  [ -n "$orq" ] || orq=n/a
  echo "| $(src_label $src) | $(ms "$o") | $(ms "$p") | $(ratio "$p" "$o" 1) | $orq | $prq | $(ratio "$orq" "$prq" 3) |"
done
[ -z "${PT_REQ[ours.file]:-}" ] || echo "(file:// requests: ours counts its store reads in ltvfs_stats(); the peer has no counter.)"
echo
echo "### Cold full scan (fresh process: open + SELECT id, length(payload) FROM t over all $NROWS rows; ours median of $SCAN_RUNS, peer 1 run)"
echo
echo "| source | ours s | peer s | peer/ours (x faster) | ours requests | peer requests | ours/peer requests | ours peak RSS MiB | peer peak RSS MiB | ours/peer RSS |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
notes=()
for src in file s3 lat; do
  o=${SC_S[ours.$src]} p=${SC_S[peer.$src]}
  orq=${SC_REQ[ours.$src]:-} prq=${SC_REQ[peer.$src]:-}
  [ -n "$orq" ] || orq=n/a
  [ "$src" != file ] || prq=n/a
  pl=$(sec "$p") tilde=
  if [ -n "${SC_NOTE[peer.$src]}" ]; then
    tilde="~"
    notes+=("peer over $(src_label "$src"): stopped after ${SC_NOTE[peer.$src]}; its time and requests are extrapolated linearly to all rows (~), its RSS is that of the partial run.")
  fi
  [ "$prq" == n/a ] || [ -z "$prq" ] || prq="$tilde$prq"
  r=$(ratio "$p" "$o" 1)
  [ "$r" == - ] || r=$tilde$r
  echo "| $(src_label $src) | $(sec "$o") | $tilde$pl | $r | $orq | $prq | $(ratio "$orq" "${prq#\~}" 4) | $(mib "${SC_RSS[ours.$src]}") | $(mib "${SC_RSS[peer.$src]}") | $(ratio "${SC_RSS[ours.$src]}" "${SC_RSS[peer.$src]}" 3) |"
done
for n in "${notes[@]}"; do echo "$n"; done
[ -z "${SC_REQ[ours.file]:-}" ] || echo "(file:// requests: ours counts its store reads in ltvfs_stats(); the peer has no counter.)"
sp=$(ratio "${SC_S[peer.s3]}" "${SC_S[ours.s3]}" 2)
rq=$(ratio "${SC_REQ[ours.s3]:-}" "${SC_REQ[peer.s3]:-}" 4)
rs=$(ratio "${SC_RSS[ours.s3]}" "${SC_RSS[peer.s3]}" 3)
echo
echo "| target (cold scan over s3://, 0 ms) | wanted | measured | |"
echo "|---|---:|---:|---|"
echo "| peer time / ours | >= 10 | $sp | $(meets "$sp" '>=' 10) |"
echo "| ours requests / peer | <= 0.05 | $rq | $(meets "$rq" '<=' 0.05) |"
echo "| ours peak RSS / peer | <= 0.2 | $rs | $(meets "$rs" '<=' 0.2) |"
echo
echo "### Warm point queries ($WARM_N random ids as a warm-up, then the same ids $WARM_PASSES times, timed; one read transaction each; one process; median of $WARM_RUNS processes)"
echo
echo "| side | source | queries/s | ratio to plain sqlite3 | target >= 0.9 | ratio to plain ?immutable=1 |"
echo "|---|---|---:|---:|---|---:|"
pq=${WM_QPS[plain.file]} iq=${WM_QPS[immutable.file]}
echo "| plain sqlite3 | local copy | $(fmt 1 0 "$pq") | 1.00 | | $(ratio "$pq" "$iq" 2) |"
echo "| plain sqlite3 ?immutable=1 | local copy | $(fmt 1 0 "$iq") | $(ratio "$iq" "$pq" 2) | | 1.00 |"
for k in ours.file ours.s3 peer.file peer.s3; do
  side=${k%%.*} src=${k#*.}
  r=$(ratio "${WM_QPS[$k]}" "$pq" 2)
  t=
  [ "$side" != ours ] || t=$(meets "$r" '>=' 0.9)
  n=${WM_NOTE[$k]:-}
  [ -z "$n" ] || n=" ($n)"
  echo "| $side | $(src_label "$src")$n | $(fmt 1 0 "${WM_QPS[$k]}") | $r | $t | $(ratio "${WM_QPS[$k]}" "$iq" 2) |"
done
echo "(ours ran with LTVFS_CACHE_SIZE=$WARM_CACHE; the peer with its defaults; SQLite's own page cache is the default 2000 KiB on every side. Plain sqlite3 pays file locks and a change-counter read per read transaction (fcntl, stat, pread); ?immutable=1 skips them and is the upper bound for a read-only copy.)"
qo=$(ratio "${WM_QPS[ours.file]}" "${WM_QPS[peer.file]}" 2)
echo
echo "ours/peer warm queries (file://): $qo. Bench wall time: $((T_END - T_START)) s."
if [ -s "$WORK/errors.txt" ]; then
  echo
  echo "Errors ($ERRORS failed runs, $WRONG wrong answers; logs in $WORK):"
  cat "$WORK/errors.txt"
  exit 1
fi
# The scratch holds ~160 MB; KEEP=1 keeps it (replica, local copy, helper).
[ "${KEEP:-0}" == 1 ] || rm -rf "$WORK"
exit 0
