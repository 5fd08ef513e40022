#!/bin/bash
# Integration test of the write-side VFS's start-up, lease, outages and
# several writers, with real processes (Python's sqlite3 module and the
# sqlite3 shell loading libltvfs; tests/primary_writer.py is the app):
#
#   ahead      a second database opening a replica another primary wrote is
#              refused, with a message naming both TXIDs; with
#              bootstrap=restore it is restored and continues at the next
#              TXID (a new machine takes over in one open);
#   race       20 times, two "hosts" (two processes, two spool directories)
#              open the same replica at once: exactly one opens for writing
#              and uploads, the other fails naming the lease holder;
#   takeover   lock.json replaced behind a running primary: it stops
#              uploading, fails the next write with a clear error, stays
#              readable, and the replica holds nothing from it afterwards;
#   sync       sync=remote: when a commit returns, its TXID is in the bucket;
#   writers    two Python workers and a sqlite3 shell write one database at
#              once through litestream-primary: every commit of each reaches
#              the replica, TXIDs contiguous, the replica equals the database;
#   outage     over s3:// through the fault proxy: the store fails every
#              request while commits continue; the spool grows to spool_max
#              and writes fail with SQLITE_FULL and the spool message; the
#              store returns, the spool drains, writes work again, nothing
#              is lost.
set -euo pipefail
srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-$srcdir}
LTVFS=${LTVFS:-$top_builddir/tools/ltvfs}
LIB=${LTVFS_LIB:-$top_builddir/.libs/libltvfs.so}
SQLITE3=${SQLITE3:-sqlite3}
PY=/usr/bin/python3
. "$srcdir/tests/lib_fixtures.sh"
test_workdir primary_ops
require_sqlite3
require_python_ext
export LITESTREAM_LOG_FILE=$WORK/ltvfs.log
WRITER="$srcdir/tests/primary_writer.py"

same_pages() { # LABEL REPLICA_URL DB
  local copy=$WORK/copy.db
  cp "$3" "$copy"
  if restore_ok "$1: restore" "$WORK/r.db" "$2"; then
    check "$1: restore equals the database page for page" "$(img_sha256 "$WORK/r.db")" "$(img_sha256 "$copy")"
  fi
}
# wait_for LABEL SECONDS CMD...: polls CMD every 50 ms until it succeeds.
wait_for() {
  local label=$1 secs=$2 i
  shift 2
  for ((i = 0; i < secs * 20; i++)); do
    if "$@" >/dev/null 2>&1; then ok "$label"; return 0; fi
    sleep 0.05
  done
  notok "$label (not within ${secs} s)"
  return 0
}

# ---- bad settings: the open fails naming the setting and its value ----
bad_open() { # LABEL PARAMS WANT
  local out
  out=$(env -u LITESTREAM_REPLICA_URL timeout 30 "$SQLITE3" -batch :memory: ".load $LIB" \
    ".open file:$WORK/bad.db?vfs=litestream-primary$2" "SELECT 1;" 2>&1) || true
  check_contains "bad: $1" "$out" "$3"
}
bad_open "no replica URL" "" "no replica URL: add replica=URL"
bad_open "sync_interval=abc" "&replica=file://$WORK/rep-bad&sync_interval=abc" "sync_interval=abc: not an interval"
bad_open "sync=sometimes" "&replica=file://$WORK/rep-bad&sync=sometimes" "sync=sometimes: 'remote' or 'local'"
bad_open "spool_max=lots" "&replica=file://$WORK/rep-bad&spool_max=lots" "spool_max=lots: not a size"
bad_open "bootstrap=maybe" "&replica=file://$WORK/rep-bad&bootstrap=maybe" "bootstrap=maybe: 'restore' or 'none'"
bad_open "lease_ttl=1ms" "&replica=file://$WORK/rep-bad&lease_ttl=1ms" "lease_ttl=1ms: not a duration of 1 s to 1 day"
bad_open "a bad replica URL" "&replica=ftp://nowhere/x" "ftp://nowhere/x"
check "bad: nothing was created for a refused open" "$(ls "$WORK/rep-bad" 2>/dev/null | wc -l)" 0

# ---- ahead ----
REP=$WORK/rep-ahead URL=file://$WORK/rep-ahead
$PY "$WRITER" "$LIB" "$WORK/a.db" "$URL" "$WORK/ack-a" --commits 5 --params "&sync_interval=0" >/dev/null 2>&1
na=$(l0_contiguous "$URL")
check "ahead: primary A wrote TXIDs 1..N (the journal mode, the table, 5 commits)" "$na" 7
"$SQLITE3" -batch "$WORK/b.db" "CREATE TABLE other(x); INSERT INTO other VALUES(1);"
out=$($PY "$WRITER" "$LIB" "$WORK/b.db" "$URL" "$WORK/ack-b" --commits 1 2>&1) && rc=0 || rc=$?
check "ahead: B's open is refused" "$rc" 1
check_contains "ahead: the message names both TXIDs" "$out" "is at TXID 0000000000000007, ahead of this database (TXID 0000000000000000"
check "ahead: nothing was written to the replica" "$(l0_contiguous "$URL")" 7
# The Go VFS's write mode restores by default only on the litestream VFS's
# delegated opens: with LITESTREAM_WRITE_ENABLED in the environment, a
# direct litestream-primary open is still refused.
out=$(LITESTREAM_WRITE_ENABLED=true $PY "$WRITER" "$LIB" "$WORK/b.db" "$URL" "$WORK/ack-b" --commits 1 2>&1) && rc=0 || rc=$?
check "ahead: with LITESTREAM_WRITE_ENABLED=true, B's litestream-primary open is still refused" "$rc" 1
check_contains "ahead: ... naming both TXIDs" "$out" "ahead of this database"
check "ahead: ... and nothing was written" "$(l0_contiguous "$URL")" 7
out=$($PY "$WRITER" "$LIB" "$WORK/b.db" "$URL" "$WORK/ack-b" --commits 2 --params "&bootstrap=restore&sync_interval=0" 2>&1) && rc=0 || rc=$?
check "ahead: bootstrap=restore opens" "$rc" 0
check "ahead: B continued at TXID 8 (two commits: 8, 9)" "$(l0_contiguous "$URL")" 9
same_pages "ahead" "$URL" "$WORK/b.db"
check "ahead: B's database is the replica's (A's rows and B's)" \
  "$("$SQLITE3" -batch "$WORK/b.db" "SELECT count(*) > 5, (SELECT count(*) FROM sqlite_master WHERE name='other') FROM t")" "1|0"

# ---- race ----
REP=$WORK/rep-race URL=file://$WORK/rep-race
wins=0 fails_named=0
for ((i = 1; i <= 20; i++)); do
  for h in 1 2; do
    $PY "$WRITER" "$LIB" "$WORK/host$h.db" "$URL" "$WORK/ack-race$h" --commits 1 --hold 1 --id-base $h \
      --params "&bootstrap=restore&sync_interval=0&spool=$WORK/spool-host$h" >"$WORK/race$h.out" 2>&1 &
  done
  wait_ok=0
  wait %1 && wait_ok=$((wait_ok + 1)) || true
  wait %2 && wait_ok=$((wait_ok + 1)) || true
  wins=$((wins + (wait_ok == 1 ? 1 : 0)))
  if grep -qs "is held by" "$WORK/race1.out" "$WORK/race2.out"; then fails_named=$((fails_named + 1)); fi
done
check "race: exactly one of two hosts opened for writing, 20 times out of 20" "$wins" 20
check "race: the other named the lease holder, 20 times" "$fails_named" 20
check "race: the replica's TXIDs are contiguous (the first win: journal mode, table, commit; then a commit a win)" "$(l0_contiguous "$URL")" 22

# ---- takeover ----
REP=$WORK/rep-take URL=file://$WORK/rep-take
$PY "$WRITER" "$LIB" "$WORK/take.db" "$URL" "$WORK/ack-take" --interval 0.05 --stop-on-error \
  --params "&sync_interval=0&lease_ttl=3s&lease_renew=300ms" >"$WORK/take.out" 2>&1 &
take_pid=$!
wait_for "takeover: the primary opened" 30 grep -q opened "$WORK/take.out"
# A second process of the same host, writing the same database (it does not
# upload: the first one does).
$PY "$WRITER" "$LIB" "$WORK/take.db" "$URL" "$WORK/ack-take2" --interval 0.05 --stop-on-error --id-base 2 \
  --params "&sync_interval=0&lease_ttl=3s&lease_renew=300ms" >"$WORK/take2.out" 2>&1 &
take2_pid=$!
wait_for "takeover: a second process of the host opened it too" 30 grep -q opened "$WORK/take2.out"
wait_for "takeover: a few commits uploaded" 30 test -f "$REP/ltx/0/0000000000000003-0000000000000003.ltx"
printf '{"owner":"intruder","generation":99,"expires":"2099-01-01T00:00:00Z","expires_ms":4070908800000}\n' >"$REP/lock.json.tmp"
replaced_ms=$(($(date +%s%N) / 1000000))
mv "$REP/lock.json.tmp" "$REP/lock.json"
replaced_at=$(l0_contiguous "$URL")
wait_for "takeover: the writer stopped" 30 grep -q "read ok" "$WORK/take.out"
wait $take_pid && rc=0 || rc=$?
out=$(cat "$WORK/take.out")
wait_for "takeover: the host's other process stopped writing too" 30 grep -q "read ok" "$WORK/take2.out"
wait $take2_pid || true
check_contains "takeover: it says why" "$(cat "$WORK/take2.out")" "lost the replica's lease"
check "takeover: the writer stopped with an error" "$rc" 3
check_contains "takeover: the error says the lease was lost" "$out" "lost the replica's lease"
check_contains "takeover: the database is still readable" "$out" "read ok"
after=$(l0_contiguous "$URL")
# It learns at its next renewal (lease_renew=300ms): no commit made later
# than that was uploaded. Each L0 file's header holds its commit's time
# (ms); the newest of those uploaded after the takeover must be within the
# renewal interval of it, give or take 700 ms of scheduling on a loaded
# machine. (Counting files instead, at a commit every 50 ms from two
# processes, failed about one run in three at a bound of 8.)
newest_ms=0
for ((t = replaced_at + 1; t <= after; t++)); do
  f=$(printf '%s/ltx/0/%016x-%016x.ltx' "$REP" "$t" "$t")
  ts=$(od -An -t u8 --endian=big -j32 -N8 "$f" | tr -d ' ')
  [ "$ts" -gt "$newest_ms" ] && newest_ms=$ts
done
if [ "$newest_ms" -le $((replaced_ms + 300 + 700)) ]; then
  ok "takeover: uploads stopped within a renewal interval ($replaced_at -> $after; the newest commit uploaded $((newest_ms - replaced_ms)) ms after the takeover)"
else
  notok "takeover: uploads went on after the lease was taken ($replaced_at -> $after; a commit $((newest_ms - replaced_ms)) ms after it was uploaded)"
fi
sleep 1
check "takeover: nothing more was uploaded after the writer stopped" "$(l0_contiguous "$URL")" "$after"
check "takeover: lock.json is the intruder's" "$(grep -o '"owner":"[^"]*"' "$REP/lock.json")" '"owner":"intruder"'

# ---- sync=remote ----
REP=$WORK/rep-sync URL=file://$WORK/rep-sync
out=$($PY - "$LIB" "$WORK/sync.db" "$URL" "$REP" <<'PYEOF'
import os, sqlite3, sys
lib, db, url, rep = sys.argv[1:]
b = sqlite3.connect(":memory:"); b.enable_load_extension(True); b.load_extension(lib)
c = sqlite3.connect("file:%s?vfs=litestream-primary&replica=%s&sync=remote&sync_interval=1s" % (db, url),
                    uri=True, isolation_level=None)
c.execute("PRAGMA journal_mode=wal").fetchone()
c.execute("CREATE TABLE t(x)")
bad = 0
for i in range(20):
    c.execute("INSERT INTO t VALUES(?)", (i,))
    txid = c.execute("SELECT litestream_txid()").fetchone()[0]
    if not os.path.exists("%s/ltx/0/%s-%s.ltx" % (rep, txid, txid)):
        bad += 1
print("commits-not-in-bucket", bad, "txid", int(txid, 16))
PYEOF
)
check_contains "sync: every commit was in the bucket when it returned" "$out" "commits-not-in-bucket 0 "

# ---- several primaries in one process ----
out=$($PY - "$LIB" "$WORK" <<'PYEOF'
import os, sqlite3, sys
lib, work = sys.argv[1:]
b = sqlite3.connect(":memory:"); b.enable_load_extension(True); b.load_extension(lib)
cons = []
for name in ("one", "two", "three"):
    c = sqlite3.connect("file:%s/multi-%s.db?vfs=litestream-primary&replica=file://%s/rep-multi-%s&sync_interval=0"
                        % (work, name, work, name), uri=True, isolation_level=None)
    c.execute("PRAGMA journal_mode=wal").fetchone()
    c.execute("CREATE TABLE t(x)")
    cons.append((name, c))
for i in range(10):
    for k, (name, c) in enumerate(cons):
        if i <= k * 3 + 3:
            c.execute("INSERT INTO t VALUES(?)", (name,))
res = []
for name, c in cons:
    txid = c.execute("PRAGMA litestream_sync").fetchone()[0]
    st = c.execute("SELECT ltvfs_stats()").fetchone()[0]
    res.append("%s:%d:%s" % (name, int(txid, 16), '"lease_held":true' in st))
    c.close()
print(" ".join(res))
PYEOF
)
check "multi: three primaries in one process, each its own TXIDs and lease" "$out" "one:6:True two:9:True three:12:True"
for name in one two three; do
  same_pages "multi $name" "file://$WORK/rep-multi-$name" "$WORK/multi-$name.db"
done

# ---- a process that does not upload, on a replica nobody created yet ----
# (Another process of the host holds the upload lock: this one starts up
# without the lease, and lists a file:// replica whose directory does not
# exist yet. It is an empty replica, not an error.)
REP=$WORK/rep-later URL=file://$WORK/rep-later DB=$WORK/later.db
mkdir -p "$DB-ltvfs"
out=$(flock "$DB-ltvfs/upload.lock" timeout 60 "$SQLITE3" -batch :memory: ".load $LIB" \
  ".open file:$DB?vfs=litestream-primary&replica=$URL&close_timeout=500ms" \
  "CREATE TABLE t(x); INSERT INTO t VALUES(1);" 2>&1) && rc=0 || rc=$?
check "later: a non-uploading process opens a replica that does not exist yet" "$rc" 0
[ $rc -eq 0 ] || echo "$out" | diag
out=$("$SQLITE3" -batch :memory: ".load $LIB" ".open file:$DB?vfs=litestream-primary&replica=$URL" \
  "PRAGMA litestream_sync;" 2>&1)
check "later: the next uploader drains what it spooled" "$(l0_contiguous "$URL")" 2

# ---- several writers on one host ----
REP=$WORK/rep-many URL=file://$WORK/rep-many DB=$WORK/many.db
"$SQLITE3" -batch "$DB" "PRAGMA journal_mode=wal; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);" >/dev/null
: >"$WORK/ack-many"
$PY "$WRITER" "$LIB" "$DB" "$URL" "$WORK/ack-many" --commits 150 --id-base 1 --params "&sync_interval=100ms" >"$WORK/w1.out" 2>&1 &
p1=$!
$PY "$WRITER" "$LIB" "$DB" "$URL" "$WORK/ack-many" --commits 150 --id-base 2 --params "&sync_interval=0" >"$WORK/w2.out" 2>&1 &
p2=$!
{
  printf '.load %s\n.open file:%s?vfs=litestream-primary&replica=%s\n.timeout 30000\n' "$LIB" "$DB" "$URL"
  for ((i = 1; i <= 100; i++)); do printf 'INSERT INTO t VALUES(%d, randomblob(500));\n' $((3000000000 + i)); done
} | timeout 120 "$SQLITE3" -batch -bail >"$WORK/w3.out" 2>&1 && r3=0 || r3=$?
wait $p1 && r1=0 || r1=$?
wait $p2 && r2=0 || r2=$?
check "writers: all three finished (python, python, shell)" "$r1 $r2 $r3" "0 0 0"
n=$(l0_contiguous "$URL")
if [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -gt 1 ]; then ok "writers: L0 TXIDs 1..$n, contiguous"; else notok "writers: L0 TXIDs: $n"; fi
same_pages "writers" "$URL" "$DB"
check "writers: every row of each writer is in the replica" \
  "$("$SQLITE3" -batch "$WORK/r.db" "SELECT count(*) FROM t WHERE id > 3000000000")" 100
missing=$($PY "$WRITER" --missing "$WORK/r.db" "$WORK/ack-many")
check "writers: every acknowledged commit of the Python workers is in the replica" "$missing" 0

# ---- a replica deleted and written again under a reader's warm cache ----
REP=$WORK/rep-again URL=file://$WORK/rep-again
$PY "$WRITER" "$LIB" "$WORK/again.db" "$URL" "$WORK/ack-again" --commits 4 --params "&sync_interval=0" >/dev/null 2>&1
reader() { printf '.load %s\n.open file:again?vfs=litestream&replica=%s&poll=100\n%s\n' "$LIB" "$URL" "$1" |
  timeout 60 "$SQLITE3" -batch 2>&1; }
first=$(reader "SELECT litestream_txid(), count(*) FROM t;")
check "again: the reader cached history A" "$first" "0000000000000006|$(sqlite3 "$WORK/again.db" 'SELECT count(*) FROM t')"
"$LTVFS" hydrate "$URL" --cache-dir "$LITESTREAM_CACHE_DIR" -q >/dev/null # the whole image at TXID 6
rm -rf "$REP" "$WORK/again.db" "$WORK/again.db-ltvfs"
"$SQLITE3" -batch "$WORK/again.db" "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); INSERT INTO t VALUES(42, 'b');"
$PY "$WRITER" "$LIB" "$WORK/again.db" "$URL" "$WORK/ack-again2" --commits 1 --params "&sync_interval=0" >/dev/null 2>&1
nb=$(l0_contiguous "$URL")
check "again: history B is shorter than A" "$([ "$nb" -lt 6 ] && echo yes)" yes
check "again: a warm reopen serves history B, not the cached A" \
  "$(reader "SELECT litestream_txid(), count(*), min(id) FROM t;")" \
  "$(printf '%016x' "$nb")|$(sqlite3 "$WORK/again.db" 'SELECT count(*) FROM t')|42"
check_contains "again: the log says the image was started afresh" "$(cat "$LITESTREAM_LOG_FILE")" "is not the one the local image holds"

# ---- the Go VFS's write mode, on our library ----
GOVFS=${LTVFS_GO_VFS:-$srcdir/.npm-deps/node_modules/litestream-vfs-linux-amd64/litestream-vfs.so}
if [ -f "$GOVFS" ]; then
  GOVFS=$(cd "$(dirname "$GOVFS")" && pwd)/$(basename "$GOVFS")
  REP=$WORK/rep-dropin URL=file://$WORK/rep-dropin
  dropin() { # dropin MACHINE SQL: what a Go VFS user runs, with libltvfs instead
    env LITESTREAM_WRITE_ENABLED=true LITESTREAM_REPLICA_URL="$URL" LITESTREAM_SYNC_INTERVAL=0 \
      LITESTREAM_CACHE_DIR="$WORK/dropin-$1" timeout 60 "$SQLITE3" -batch :memory: ".load $LIB" \
      ".open file:app.db?vfs=litestream" "$2" 2>&1
  }
  go_count() { echo "SELECT count(*), sum(x) FROM t;" | go_vfs_sql "$URL" read "$WORK/goread" 2>&1; }
  dropin m1 "CREATE TABLE t(x); INSERT INTO t VALUES(1),(2);" >/dev/null
  check "dropin: machine 1 wrote through LITESTREAM_WRITE_ENABLED; the Go VFS reads it" "$(go_count)" "2|3"
  dropin m2 "INSERT INTO t VALUES(3);" >/dev/null
  check "dropin: machine 2 took over in one open (restored, then wrote)" "$(go_count)" "3|6"
  echo "INSERT INTO t VALUES(4);" | go_vfs_sql "$URL" write "$WORK/gowrite" >/dev/null 2>&1
  check "dropin: the Go VFS in write mode added a row" "$(go_count)" "4|10"
  check "dropin: machine 1 continues after both (its database was behind: restored)" \
    "$(dropin m1 "INSERT INTO t VALUES(5); SELECT count(*), sum(x) FROM t;")" "5|15"
  check "dropin: the Go VFS reads it" "$(go_count)" "5|15"
  check "dropin: our replica VFS reads it (write mode off)" \
    "$("$SQLITE3" -batch :memory: ".load $LIB" ".open file:x?vfs=litestream&replica=$URL" "SELECT count(*), sum(x) FROM t;" 2>&1)" "5|15"
  check_contains "dropin: the local database lives under the cache directory" \
    "$(ls "$WORK/dropin-m1")" ".primary.db"
fi

# ---- outage (s3://) ----
if command -v node >/dev/null 2>&1 && [ -d "$srcdir/.npm-deps/node_modules/@20minutes/s3rver" ]; then
  start_test_s3
  RAW="s3://$S3_BUCKET/outage?endpoint=$S3_PROXY_ENDPOINT" DB=$WORK/outage.db
  URL=$(uri_escape "$RAW") # a URI parameter value
  $PY "$WRITER" "$LIB" "$DB" "$URL" "$WORK/ack-out" --interval 0.01 --stop-on-error \
    --params "&sync_interval=100ms&spool_max=300K" >"$WORK/out.out" 2>&1 &
  out_pid=$!
  wait_for "outage: the primary opened over s3://" 30 grep -q opened "$WORK/out.out"
  sleep 1
  s3_fault 503 n=100000000 >/dev/null
  wait_for "outage: writes stopped once the spool was full" 120 grep -q "read ok" "$WORK/out.out"
  wait $out_pid && rc=0 || rc=$?
  out=$(cat "$WORK/out.out")
  check "outage: the writer's last commit failed" "$rc" 3
  check_contains "outage: the error is SQLITE_FULL" "$out" "database or disk is full"
  check_contains "outage: the log names the spool and its bound" "$(cat "$LITESTREAM_LOG_FILE")" "(spool_max 307200)"
  check_contains "outage: the database is still readable" "$out" "read ok"
  acked=$(wc -l <"$WORK/ack-out")
  s3_fault none >/dev/null
  out=$($PY "$WRITER" "$LIB" "$DB" "$URL" "$WORK/ack-out" --commits 3 --retry-full 30 --params "&sync_interval=100ms&spool_max=300K" 2>&1) && rc=0 || rc=$?
  check "outage: the store is back: writes work again and the close drains the spool" "$rc" 0
  [ $rc -eq 0 ] || echo "$out" | tail -5 | diag
  check "outage: the spool is empty" "$(ls "$DB-ltvfs/ltx" | wc -l)" 0
  same_pages "outage" "$RAW" "$DB"
  missing=$($PY "$WRITER" --missing "$WORK/r.db" "$WORK/ack-out")
  check "outage: all $acked commits acknowledged before and 3 after are in the replica" "$missing" 0
  s3_env_stop
else
  echo "# node or s3rver missing: the outage part is skipped"
fi
finish
