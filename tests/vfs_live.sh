#!/bin/bash
# Integration test: live updates of the "litestream" VFS from an independent
# primary, the real Litestream Go VFS in write mode (npm
# litestream-vfs-linux-amd64@0.5.17).
#
# One long-lived reader: a sqlite3 shell (coprocess) that did `.load
# libltvfs`, `.open 'file:live?vfs=litestream&replica=URL&poll=100'` and
# `PRAGMA cache_size = 10` (so its queries read pages through the VFS, not
# from SQLite's own cache).
# The writer commits a series of states, one Go VFS process per step (it
# syncs one L0 file when its connection closes); the same SQL goes to a plain
# database, which gives the expected content of each state. Step by step
# (write, wait until the reader sees it, next step), so the test is
# deterministic:
#   - the writer's TXID of each step (`ltvfs ls`) is the previous one + 1,
#     except for a rolled-back step (no file, the TXID stays);
#   - the reader, polling "SELECT litestream_txid(), count, total, schema
#     size, litestream_lag()" every ~50 ms, sees the new TXID with the new
#     content within 30 s, and every observation before is exactly the
#     previous state (nothing skipped, nothing backwards, no content that
#     does not belong to the TXID reported);
#   - at each state the reader matches the plain database on schema, sha3 of
#     every table, a range query and page_size, and `ltvfs restore --txid`
#     of the replica on page_count, freelist_count and integrity_check
#     (steps include growth with overflow pages, an index, a WITHOUT ROWID
#     table, a freelist, VACUUM shrinking the file, regrowth and drops);
#     litestream_lag() is 0..5 and litestream_time() is the timestamp
#     `ltvfs ls` shows for the file of that TXID (to the ms);
#   - a read transaction (BEGIN) opened before step 3 keeps seeing state 2
#     (TXID, content and table hash) while step 3 is committed and several
#     polls go by; after COMMIT the next statement sees step 3;
#   - a rolled-back step: the TXID and content stay for 0.6 s of polling.
# Run over file:// (the reader opens the still-empty replica first: the open
# waits until the Go VFS writes TXID 1) and over s3:// on the loopback S3
# server of tests/s3/env.sh (replica URL from LITESTREAM_REPLICA_URL; this
# part is skipped when node is missing).
#
# The Go VFS is always run with `env -u AWS_CA_BUNDLE` and under `timeout`.
# Environment overrides: LTVFS, LTVFS_LIB, LTVFS_GO_VFS, SQLITE3.
set -euo pipefail

srcdir=${top_srcdir:-${srcdir:-.}}
top_builddir=${top_builddir:-.}
LTVFS=${LTVFS:-$top_builddir/tools/ltvfs}
LIB=${LTVFS_LIB:-$top_builddir/.libs/libltvfs.so}
SQLITE3=${SQLITE3:-sqlite3}
GOVFS=${LTVFS_GO_VFS:-$srcdir/.npm-deps/node_modules/litestream-vfs-linux-amd64/litestream-vfs.so}

. "$srcdir/tests/lib_fixtures.sh"
test_workdir vfs_live

require_sqlite3
require_go_vfs
if [ ! -x "$LTVFS" ]; then
  notok "$LTVFS exists"
  finish
fi
if [ ! -f "$LIB" ]; then
  notok "$LIB exists"
  finish
fi
LIB=$(cd "$(dirname "$LIB")" && pwd)/$(basename "$LIB")
# A write to a reader that died must fail, not kill this script.
trap '' PIPE

# ---- the states ----
PAYLOAD="CAST(substr(replace(printf('%.*c', L / 64 + 1, '.'), '.', hex(sha3(id))), 1, L) AS BLOB)"
# rows FROM TO [BIG]: rows FROM..TO of t (every 97th row overflows; BIG: all).
rows() {
  local big=${3:-0}
  cat <<EOF
INSERT INTO t(id, v, name, pad)
  SELECT id, id * 3, substr('abcdefghijklmnopqrstuvwxyz', 1 + id % 26, 1) || lower(substr(hex(sha3(id)), 1, 8)), $PAYLOAD
  FROM (SELECT value AS id, CASE WHEN $big OR value % 97 = 0 THEN 5000 + value % 3000 ELSE 20 + (value * 7919) % 600 END AS L
        FROM generate_series($1, $2));
EOF
}
NSTEPS=9
ISOLATION_STEP=3  # committed while the reader holds a read transaction
ROLLBACK_STEP=4   # writes nothing
step_sql() {
  case $1 in
  1)
    echo "CREATE TABLE t(id INTEGER PRIMARY KEY, v INT, name TEXT, pad BLOB);"
    rows 1 300
    ;;
  2) rows 301 3000 ;;
  3)
    echo "UPDATE t SET v = v * 2, name = upper(name) WHERE id % 7 = 0;"
    echo "DELETE FROM t WHERE id % 13 = 0;"
    ;;
  4) printf '%s\n' "BEGIN;" "DELETE FROM t;" "ROLLBACK;" ;;
  5) # three SQLite transactions, one sync, one TXID
    echo "CREATE INDEX t_name ON t(name);"
    rows 3001 3500
    echo "UPDATE t SET v = -v WHERE id BETWEEN 100 AND 200;"
    ;;
  6)
    echo "CREATE TABLE u(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;"
    echo "INSERT INTO u SELECT printf('key%06d', value), zeroblob(10 + value % 300) FROM generate_series(1, 500);"
    echo "DELETE FROM t WHERE id > 1000;"
    ;;
  7) echo "VACUUM;" ;;  # the file shrinks
  8) rows 5000 5400 1 ;; # grows past its old size, overflow chains
  9) printf '%s\n' "DROP INDEX t_name;" "DROP TABLE u;" "UPDATE t SET pad = NULL WHERE id % 2 = 0;" ;;
  esac
}
# The reader's poll: TXID | t count | t total(v) | schema size | lag.
POLL_Q="SELECT litestream_txid(), (SELECT count(*) FROM t), (SELECT total(v) FROM t), (SELECT count(*) FROM sqlite_master), litestream_lag();"
# summary DB: the same content columns from a plain database.
summary() { "$SQLITE3" -batch "$1" "SELECT (SELECT count(*) FROM t), (SELECT total(v) FROM t), (SELECT count(*) FROM sqlite_master);"; }
# Full comparison at each state, "name<TAB>sql": the content against the
# plain database, the file's shape against `ltvfs restore --txid` of the
# replica. (Not the shape against the plain database: after a shrink the Go
# VFS writer keeps its stale size and appends beyond it, so from step 8 on
# the replica's file is larger than the plain one, with "never used" pages;
# the reader must serve the replica as it is.)
LOGICAL_QUERIES=$(
  cat <<'EOF'
schema	SELECT type, name, tbl_name FROM sqlite_master ORDER BY type, name;
t_sha3	SELECT hex(sha3_query('SELECT * FROM t ORDER BY id'));
u_sha3	SELECT hex(sha3_query((SELECT CASE WHEN count(*) THEN 'SELECT * FROM u ORDER BY k' ELSE 'SELECT 0' END FROM sqlite_master WHERE name = 'u')));
t_range	SELECT count(*), sum(id), sum(length(pad)) FROM t WHERE name >= 'm';
page_size	PRAGMA page_size;
EOF
)
PHYSICAL_QUERIES=$(
  cat <<'EOF'
page_count	PRAGMA page_count;
freelist_count	PRAGMA freelist_count;
integrity_check	PRAGMA integrity_check;
EOF
)

# ---- the writer ----
# go_write URL: runs the SQL on stdin through the Go VFS in write mode.
go_write() { go_vfs_sql "$1" write "$W"; }
latest_txid() { "$LTVFS" ls "$1" 2>/dev/null | sed -n 's/^latest: \([0-9a-f]\{16\}\).*/\1/p'; }
# file_time URL TXID: the timestamp `ltvfs ls` shows for the file ending at
# TXID (file://: its mtime, which the Go VFS sets to the header's timestamp;
# s3://: LastModified), as ms since the epoch.
file_time() {
  local ts
  ts=$("$LTVFS" ls "$1" 2>/dev/null | awk -v t="$2" '$1 ~ /^[0-9]+$/ && $3 == t { ts = $NF } END { print ts }')
  epoch_ms "$ts"
}
# header_time URL TXID: the header timestamp (ms) of the LTX file ending at
# TXID, for a file:// replica; empty for others.
header_time() {
  case $1 in file://*) ;; *) return 0 ;; esac
  local f
  f=$(ls "${1#file://}"/ltx/*/*-"$2".ltx 2>/dev/null | tail -n 1)
  [ -n "$f" ] && "$LTVFS" ltx dump "$f" | sed -n 's/^timestamp:.*(\([0-9]*\) ms)$/\1/p'
}
# epoch_ms RFC3339: ms since the epoch ("bad: X" if it does not parse).
epoch_ms() { date -u -d "$1" +%s%3N 2>/dev/null || echo "bad: $1"; }

# ---- the reader (a sqlite3 shell coprocess) ----
# reader_start OPEN_ARG [ENV...]: starts the shell, loads libltvfs, opens.
reader_start() {
  local open=$1
  shift
  coproc READER { exec env "$@" timeout 150 "$SQLITE3" -batch 2>&1; }
  RPID=$READER_PID
  exec {RIN}<&"${READER[0]}" {ROUT}>&"${READER[1]}"
  READER_DEAD=0
  # (SQLite's own page cache is kept tiny: every query reads through the VFS.)
  printf '.load %s\n.open %s\nPRAGMA cache_size = 10;\n' "$LIB" "$open" 1>&"$ROUT" || READER_DEAD=1
}
reader_stop() {
  printf '.quit\n' 1>&"$ROUT" 2>/dev/null || true
  exec {ROUT}>&- {RIN}<&-
  local _
  for _ in $(seq 1 50); do kill -0 "$RPID" 2>/dev/null || break; sleep 0.1; done
  kill "$RPID" 2>/dev/null || true
  wait "$RPID" 2>/dev/null || true
}
# rq SQL [TIMEOUT]: runs SQL in the reader; R = its output lines joined with
# " ; ". Returns 1 (and marks the reader dead) on timeout or EOF.
rq() {
  local line out="" first=1
  R=""
  [ "$READER_DEAD" -eq 0 ] || return 1
  if ! printf '%s\n.print @@END\n' "$1" 1>&"$ROUT" 2>/dev/null; then
    READER_DEAD=1
    return 1
  fi
  while IFS= read -r -t "${2:-10}" -u "$RIN" line; do
    if [ "$line" == @@END ]; then
      R=$out
      return 0
    fi
    if [ $first -eq 1 ]; then out=$line; else out="$out ; $line"; fi
    first=0
  done
  R=$out
  READER_DEAD=1
  return 1
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# full_check LABEL PLAIN_DB URL TXID: the reader against the plain database
# and against the replica restored at TXID.
full_check() {
  local label=$1 plain=$2 url=$3 tx=$4 n q want out=$W/restore.db rc=0
  while IFS=$'\t' read -r n q; do
    want=$("$SQLITE3" -batch "$plain" "$q" 2>&1 | join_rows)
    rq "$q" 30 || true
    check "$label reader = plain db: $n" "$R" "$want"
  done <<<"$LOGICAL_QUERIES"
  "$LTVFS" restore "$url" -o "$out" --txid "$tx" -f -q >"$W/restore.out" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    notok "$label ltvfs restore --txid $tx (exit $rc)"
    head -5 "$W/restore.out" | diag
    return
  fi
  while IFS=$'\t' read -r n q; do
    want=$("$SQLITE3" -batch "$out" "$q" 2>&1 | join_rows)
    rq "$q" 30 || true
    check "$label reader = restore --txid $tx: $n" "$R" "$want"
  done <<<"$PHYSICAL_QUERIES"
}

# wait_state LABEL PREV_TX PREV_SUM TX SUM: polls until the reader shows
# TX with SUM (deadline 30 s, generous for a loaded 2-core machine; on
# expiry the reader's last poll error is printed); each observation must be
# PREV or the new state.
wait_state() {
  local label=$1 ptx=$2 psum=$3 tx=$4 sum=$5 t0 deadline got gtx gsum lag bad=""
  t0=$(now_ms)
  deadline=$((t0 + 30000))
  while :; do
    if ! rq "$POLL_Q" 20; then
      notok "$label: the reader answers (got: ${R:0:200})"
      return 1
    fi
    got=$R
    IFS='|' read -r gtx gsum <<<"$got"
    gsum=${got#*|}
    lag=${gsum##*|}
    gsum=${gsum%|*}
    if [ "$gtx" == "$tx" ] && [ "$gsum" == "$sum" ]; then
      ok "$label: the reader sees TXID $tx after $(($(now_ms) - t0)) ms, with its content"
      if [ -z "$bad" ]; then ok "$label: on the way, only TXID $ptx with its content"; else
        notok "$label: on the way, only TXID $ptx with its content (saw '$bad')"
      fi
      if [[ "$lag" =~ ^[0-9]+$ ]] && [ "$lag" -le 5 ]; then ok "$label: litestream_lag() = $lag"; else
        notok "$label: litestream_lag() = '$lag', want 0..5"
      fi
      return 0
    fi
    if [ -z "$bad" ] && ! { [ "$gtx" == "$ptx" ] && [ "$gsum" == "$psum" ]; }; then
      bad="$got"
    fi
    if [ "$(now_ms)" -ge "$deadline" ]; then break; fi
    sleep 0.05
  done
  notok "$label: the reader sees TXID $tx with content '$sum' within 30 s (last: '$got')"
  rq "SELECT ltvfs_last_error(), json_extract(ltvfs_stats(), '\$.polls'), json_extract(ltvfs_stats(), '\$.poll_errors');" 20 || true
  diag <<<"the reader's last error|polls|poll errors: $R"
  [ -z "$bad" ] || diag <<<"first unexpected observation: $bad"
  return 1
}

# live_run LABEL URL READER_OPEN_ARG OPEN_FIRST [ENV...]: the whole scenario.
# OPEN_FIRST=1: the reader opens the empty replica before step 1 is written.
live_run() {
  local L=$1 url=$2 open=$3 open_first=$4 k tx ptx="" psum="" sum plain t0 rc held held_sha same last
  shift 4
  W=$WORK/$L
  mkdir -p "$W/go"
  plain=$W/plain.db
  if [ "$open_first" -eq 1 ]; then
    reader_start "$open" "$@"
    sleep 0.5
  fi
  for k in $(seq 1 "$NSTEPS"); do
    if [ "$READER_DEAD" -eq 1 ] && [ "$k" -gt 1 ]; then
      notok "$L: step $k: the reader is gone"
      continue
    fi
    if [ "$k" -eq "$ISOLATION_STEP" ]; then
      rq "BEGIN; $POLL_Q" || true
      held=$R
      check "$L: step $k: BEGIN; the open read transaction shows TXID $ptx" "${held%|*}" "$ptx|$psum"
      rq "SELECT hex(sha3_query('SELECT * FROM t ORDER BY id'));" 30 || true
      held_sha=$R
    fi
    rc=0
    step_sql "$k" | go_write "$url" >"$W/write$k.out" 2>&1 || rc=$?
    if [ $rc -ne 0 ] || [ -s "$W/write$k.out" ]; then
      notok "$L: step $k: go vfs write (exit $rc)"
      head -10 "$W/write$k.out" | diag
    fi
    step_sql "$k" | "$SQLITE3" -batch "$plain"
    sum=$(summary "$plain")
    tx=$(latest_txid "$url")
    if [ "$k" -eq "$ROLLBACK_STEP" ]; then
      check "$L: step $k (rolled back): the writer's TXID stays $ptx" "$tx" "$ptx"
    elif [ "$k" -eq 1 ]; then
      check "$L: step $k: the writer's TXID" "$tx" 0000000000000001
    else
      check "$L: step $k: the writer's TXID is the previous + 1" "$tx" "$(printf '%016x' $((16#$ptx + 1)))"
    fi
    if [ "$k" -eq 1 ] && [ "$open_first" -eq 0 ]; then
      reader_start "$open" "$@"
    fi
    if [ "$k" -eq 1 ]; then
      # The first answer comes once the open is done (it waited, if the
      # replica was empty when it began).
      if rq "$POLL_Q" 30; then
        check "$L: step 1: the reader opened and sees TXID 1 with its content" "${R%|*}" "$tx|$sum"
      else
        notok "$L: step 1: the reader opened (got: ${R:0:300})"
      fi
    elif [ "$k" -eq "$ISOLATION_STEP" ]; then
      # The writer is done and the replica holds the new TXID: the open
      # transaction keeps its view over several polls.
      sleep 0.6
      rq "$POLL_Q" || true
      check "$L: step $k committed: the open read transaction still shows TXID $ptx" "${R%|*}" "$ptx|$psum"
      rq "SELECT hex(sha3_query('SELECT * FROM t ORDER BY id'));" 30 || true
      check "$L: step $k committed: the open read transaction still hashes t as before" "$R" "$held_sha"
      rq "COMMIT;" || true
      check "$L: step $k: COMMIT of the read transaction" "$R" ""
      wait_state "$L: step $k" "$ptx" "$psum" "$tx" "$sum" || true
    elif [ "$k" -eq "$ROLLBACK_STEP" ]; then
      t0=$(now_ms)
      same=1
      last=""
      while [ $(($(now_ms) - t0)) -lt 600 ]; do
        rq "$POLL_Q" || true
        last=${R%|*}
        [ "$last" == "$ptx|$psum" ] || same=0
        sleep 0.05
      done
      if [ $same -eq 1 ]; then ok "$L: step $k (rolled back): the reader stays at TXID $ptx for 0.6 s"; else
        notok "$L: step $k (rolled back): the reader stays at TXID $ptx for 0.6 s (got '$last')"
      fi
    else
      wait_state "$L: step $k" "$ptx" "$psum" "$tx" "$sum" || true
    fi
    if [ "$k" -ne "$ROLLBACK_STEP" ]; then
      full_check "$L: step $k:" "$plain" "$url" "$tx"
      rq "SELECT litestream_time();" || true
      # litestream_time() is the LTX header's timestamp: exact on file://;
      # on S3 the listing has LastModified (whole seconds, at upload), so
      # it must lie within 2 s of it.
      hts=$(header_time "$url" "$tx")
      if [ -n "$hts" ]; then
        check "$L: step $k: litestream_time() ($R) = the LTX header's timestamp" "$(epoch_ms "$R")" "$hts"
      else
        lts=$(file_time "$url" "$tx") got=$(epoch_ms "$R")
        if [[ "$got" =~ ^[0-9]+$ && "$lts" =~ ^[0-9]+$ ]] && [ $((got - lts)) -le 2000 ] && [ $((lts - got)) -le 2000 ]; then
          ok "$L: step $k: litestream_time() ($R) within 2 s of the listing's time"
        else
          notok "$L: step $k: litestream_time() ($R) within 2 s of the listing's time ($lts)"
        fi
      fi
    fi
    ptx=$tx
    psum=$sum
  done
  rq "SELECT ltvfs_pinned_txid() IS NULL, litestream_txid() = (SELECT litestream_txid());" || true
  check "$L: the reader follows the latest TXID (ltvfs_pinned_txid() is NULL)" "$R" "1|1"
  rq "PRAGMA litestream_txid;" || true
  check "$L: PRAGMA litestream_txid = the last TXID" "$R" "$ptx"
  reader_stop
}

# ---- file:// (the reader opens the empty replica first) ----
REP=$WORK/file-replica
mkdir -p "$REP"
enc_rep=$(printf '%s' "file://$REP" | sed 's/%/%25/g; s/&/%26/g; s/?/%3F/g; s/=/%3D/g; s/#/%23/g')
live_run file "file://$REP" "'file:live?vfs=litestream&replica=$enc_rep&poll=100&open_timeout=20000'" 1

# ---- a file replica filled in place (cp, scp, rsync --inplace, NFS) ----
# The next LTX file is listed empty, or as a 4 KiB or 100 KB prefix of
# itself, and completed in place a moment later. The reader (polling every
# 50 ms) reports the incomplete file (ltvfs_last_error names it), stays at
# TXID 2 meanwhile, and reaches TXID 3 with its content once the file is
# whole. (The poller once kept the first listed size for ever and froze.)
FIXDIR=$(cd "$srcdir/tests/fixtures" && pwd)
t_agg3=$(awk -F'\t' '$1 == "main" && $2 == "0000000000000003" && $3 == "restore" && $4 == "t_agg" { print $5 }' "$FIXDIR/expected.tsv")
T_AGG_Q=$(awk -F'\t' '$1 == "t_agg" { print $2 }' "$FIXDIR/queries.tsv")
# wait_reader LABEL SQL PATTERN: until the reader's answer to SQL matches
# PATTERN (deadline 30 s; on expiry the last answer and error are printed).
wait_reader() {
  local label=$1 q=$2 pat=$3 t0 deadline
  t0=$(now_ms)
  deadline=$((t0 + 30000))
  while :; do
    rq "$q" 20 || true
    if [[ "$R" == $pat ]]; then
      ok "$label (after $(($(now_ms) - t0)) ms)"
      return 0
    fi
    [ "$(now_ms)" -lt "$deadline" ] || break
    sleep 0.02
  done
  notok "$label within 30 s (last answer: '${R:0:300}')"
  rq "SELECT ltvfs_last_error();" 20 || true
  diag <<<"the reader's last error: $R"
  return 1
}
inplace_run() { # LABEL PREFIX_BYTES
  local L=$1 n=$2 d=$WORK/inplace-$1 f3 name3
  mkdir -p "$d/ltx/0"
  for t in 1 2; do
    f=$(printf '%s/main/ltx/0/%016x-%016x.ltx' "$FIXDIR" "$t" "$t")
    cp "$f" "$d/ltx/0/.tmp" && mv "$d/ltx/0/.tmp" "$d/ltx/0/$(basename "$f")"
  done
  f3=$(printf '%s/main/ltx/0/%016x-%016x.ltx' "$FIXDIR" 3 3)
  name3=$(basename "$f3")
  reader_start "'file:inplace?vfs=litestream&replica=file://$d&poll=50'"
  rq "SELECT litestream_txid();" 30 || true
  check "in place, $L: the reader opens at TXID 2" "$R" 0000000000000002
  head -c "$n" "$f3" >"$d/ltx/0/$name3"
  wait_reader "in place, $L: the reader reports the incomplete $name3" \
    "SELECT ltvfs_last_error();" "*$name3*" || true
  rq "SELECT litestream_txid();" || true
  check "in place, $L: meanwhile the reader stays at TXID 2" "$R" 0000000000000002
  tail -c +$((n + 1)) "$f3" | dd of="$d/ltx/0/$name3" bs=65536 seek="$n" oflag=seek_bytes conv=notrunc status=none
  wait_reader "in place, $L: once the file is whole the reader reaches TXID 3" \
    "SELECT litestream_txid();" 0000000000000003 || true
  rq "$T_AGG_Q" 30 || true
  check "in place, $L: TXID 3's content (t_agg)" "$R" "$t_agg3"
  rq "SELECT ltvfs_last_error() IS NULL;" || true
  check "in place, $L: no error left once it is applied" "$R" 1
  reader_stop
}
inplace_run empty 0
inplace_run 4KiB 4096
inplace_run 100KB 100000

# ---- s3:// on the loopback server (the replica URL from the environment) ----
if ! command -v node >/dev/null 2>&1; then
  echo "# node not found (needed by the test S3 server): skipping the s3:// part"
  finish
fi
start_test_s3
S3URL="s3://$S3_BUCKET/live?endpoint=$S3_ENDPOINT"
live_run s3 "$S3URL" "'file:live?vfs=litestream&poll=100'" 0 "LITESTREAM_REPLICA_URL=$S3URL"
s3_env_stop

finish
