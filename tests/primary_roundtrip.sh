#!/bin/bash
# Integration test: the write-side VFS "litestream-primary", round trip at
# every TXID.
#
# A scripted workload runs through `litestream-primary` (the real sqlite3
# shell, `.load libltvfs`, one process per step, sync_interval=0 so every
# commit is its own TXID) in WAL mode and in rollback-journal mode (and with
# locking_mode=EXCLUSIVE in each), at page
# sizes 1024, 4096 and 65536, into a file:// replica. The steps: schema with
# a WITHOUT ROWID table, inserts with overflow pages, updates, deletes, an
# index build, a rolled-back transaction (no TXID), a rolled-back
# transaction big enough to spill frames/pages before its ROLLBACK, a
# VACUUM that shrinks the file, regrowth, wal_checkpoint(TRUNCATE) between
# commits, journal_mode switches while open (WAL <-> DELETE, TRUNCATE,
# PERSIST), and several commits in one process.
#
# After each step (the process closed, so everything is uploaded):
#   - the replica's L0 TXIDs are exactly 1..N, contiguous, and a step that
#     committed nothing added none;
#   - `ltvfs restore` equals the primary's own database file page for page
#     (page-1 bytes 24-27 and 92-95 aside);
#   - our replica VFS ("litestream") and the real Litestream Go VFS (npm
#     litestream-vfs-linux-amd64, reading the same replica) give the same
#     .dump as the primary's database.
# Then "changed outside the VFS": plain sqlite3 writes the database; the
# next primary open writes a full snapshot at the next TXID and the replica
# equals the database again.
set -euo pipefail
srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-$srcdir}
LTVFS=${LTVFS:-$top_builddir/tools/ltvfs}
LIB=${LTVFS_LIB:-$top_builddir/.libs/libltvfs.so}
SQLITE3=${SQLITE3:-sqlite3}
GOVFS=${LTVFS_GO_VFS:-$srcdir/.npm-deps/node_modules/litestream-vfs-linux-amd64/litestream-vfs.so}
. "$srcdir/tests/lib_fixtures.sh"
test_workdir primary_roundtrip
require_sqlite3
have_go=1
[ -f "$GOVFS" ] || { have_go=0; echo "# Go VFS not found at $GOVFS: its checks are skipped"; }
export LITESTREAM_LOG_FILE=$WORK/ltvfs.log

# prim DB URL [PARAMS] < SQL: the SQL through litestream-primary, one process.
prim() {
  local db=$1 url=$2 params=${3:-}
  # PARAMS first: SQLite takes a parameter's first occurrence.
  { printf '.load %s\n.open file:%s?vfs=litestream-primary&replica=%s%s&sync_interval=0\n' \
      "$LIB" "$db" "$url" "$params"; cat; } | timeout 120 "$SQLITE3" -batch -bail
}

dump_sha() { "$SQLITE3" -batch "$1" .dump </dev/null 2>&1 | sha256sum | cut -c1-16; }

# check_state LABEL DB URL URI_URL: the checks after a step (URI_URL: the
# URL as a file: URI parameter value).
check_state() {
  local label=$1 db=$2 url=$3 uurl=$4 n want got copy=$WORK/copy.db
  n=$(l0_contiguous "$url")
  if [[ "$n" =~ ^[0-9]+$ ]]; then ok "$label: L0 TXIDs 1..$n, contiguous"; else notok "$label: L0 TXIDs: $n"; fi
  LAST_N=$n
  # The primary's own database, copied so that nothing here touches it.
  cp "$db" "$copy"
  want=$(dump_sha "$copy")
  if restore_ok "$label: restore" "$WORK/r.db" "$url"; then
    check "$label: restore equals the database page for page" "$(img_sha256 "$WORK/r.db")" "$(img_sha256 "$copy")"
  fi
  got=$(printf '.load %s\n.open file:x?vfs=litestream&replica=%s\n.dump\n' "$LIB" "$uurl" |
    timeout 60 "$SQLITE3" -batch 2>&1 | sha256sum | cut -c1-16)
  check "$label: litestream VFS .dump" "$got" "$want"
  if [ $have_go -eq 1 ]; then
    got=$(echo .dump | go_vfs_sql "$url" read "$WORK" 2>&1 | sha256sum | cut -c1-16)
    check "$label: Go VFS .dump" "$got" "$want"
  fi
}

# run_workload MODE PAGE_SIZE [s3]: the workload, over file:// or s3://.
run_workload() {
  local mode=$1 ps=$2 backend=${3:-file} other
  local tag=$mode-$ps-$backend db=$WORK/$mode-$ps-$backend.db
  local url=file://$WORK/rep-$mode-$ps uurl before want
  [ "$backend" == s3 ] && url="s3://$S3_BUCKET/rt-$mode-$ps?endpoint=$S3_ENDPOINT"
  uurl=$(uri_escape "$url")
  [ "$mode" == wal ] && other=delete || other=wal
  step() { # step NAME SQL
    prim "$db" "$uurl" "${STEP_PARAMS:-}" <<<"$2" >"$WORK/step.out" 2>&1 || { notok "$tag $1: the step failed"; diag <"$WORK/step.out"; }
    check_state "$tag $1" "$db" "$url" "$uurl"
  }
  step schema "PRAGMA page_size=$ps; PRAGMA journal_mode=$mode;
    CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b BLOB);
    CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
  step inserts "INSERT INTO t(a,b) SELECT hex(randomblob(20)), randomblob(abs(random())%3000) FROM generate_series(1,400);
    INSERT INTO w SELECT 'k'||value, value*2 FROM generate_series(1,300);"
  step overflow+update "INSERT INTO t(a,b) SELECT 'big', randomblob(20000) FROM generate_series(1,20);
    UPDATE t SET a=upper(a) WHERE id%3=0; UPDATE w SET v=v+1 WHERE k LIKE 'k1%';"
  step delete+index "DELETE FROM t WHERE id%4=0; CREATE INDEX ta ON t(a); DELETE FROM w WHERE v%5=0;"
  before=$LAST_N
  step rollback "BEGIN; INSERT INTO t(a) VALUES('rolled back'); ROLLBACK;"
  check "$tag rollback: no TXID for a rolled-back transaction" "$LAST_N" "$before"
  before=$LAST_N
  step spill-rollback "PRAGMA cache_size=5; BEGIN;
    INSERT INTO t(a,b) SELECT 'spill', randomblob(4000) FROM generate_series(1,300); ROLLBACK;
    INSERT INTO t(a) VALUES('after spill');"
  # WAL mode: the rolled-back frames are never committed, one TXID. Rollback
  # mode: the spill wrote free pages that the rollback does not restore, so
  # they are captured too (the replica stays equal page for page).
  if [ "$mode" == wal ]; then want=1; else want=2; fi
  check "$tag spill-rollback: TXIDs added" "$((LAST_N - before))" "$want"
  step vacuum-shrink "DELETE FROM t WHERE id > 50; DELETE FROM w; VACUUM;"
  step regrow "INSERT INTO t(a,b) SELECT 'regrow', randomblob(1500) FROM generate_series(1,500);
    INSERT INTO w SELECT 'r'||value, randomblob(300) FROM generate_series(1,200);"
  step checkpoint-truncate "INSERT INTO t(a) VALUES('c1'); PRAGMA wal_checkpoint(TRUNCATE);
    INSERT INTO t(a) VALUES('c2'); PRAGMA wal_checkpoint(TRUNCATE); INSERT INTO t(a) VALUES('c3');"
  step mode-switch "INSERT INTO t(a) VALUES('m1'); PRAGMA journal_mode=$other; INSERT INTO t(a) VALUES('m2');
    PRAGMA journal_mode=truncate; INSERT INTO t(a) VALUES('m3'); PRAGMA journal_mode=persist;
    INSERT INTO t(a) VALUES('m4'); PRAGMA journal_mode=$mode; INSERT INTO t(a) VALUES('m5');"
  before=$LAST_N
  step exclusive "PRAGMA locking_mode=EXCLUSIVE; INSERT INTO t(a) VALUES('e1');
    INSERT INTO t(a,b) SELECT 'e2', randomblob(5000) FROM generate_series(1,30); UPDATE t SET a='e3' WHERE a='e1';"
  check "$tag exclusive: locking_mode=EXCLUSIVE, three TXIDs" "$LAST_N" "$((before + 3))"
  before=$LAST_N
  step five-commits "INSERT INTO t(a) VALUES('x1'); INSERT INTO t(a) VALUES('x2');
    INSERT INTO t(a) VALUES('x3'); UPDATE t SET a='x4' WHERE a='x1'; DELETE FROM t WHERE a='x2';"
  check "$tag five-commits: five TXIDs" "$LAST_N" "$((before + 5))"
  # Batching: twenty commits within one sync interval are one TXID.
  before=$LAST_N
  STEP_PARAMS="&sync_interval=1h" step batched \
    "$(for i in $(seq 1 20); do printf "INSERT INTO t(a) VALUES('b%d'); " "$i"; done)"
  check "$tag batched: twenty commits in one sync interval, one TXID" "$LAST_N" "$((before + 1))"
  # Changed outside the VFS: plain sqlite3 writes the database.
  "$SQLITE3" -batch "$db" "INSERT INTO t(a) VALUES('outside'); UPDATE w SET v=0;" </dev/null
  before=$LAST_N
  step outside "SELECT count(*) FROM t;"
  check "$tag outside: a snapshot at the next TXID" "$LAST_N" "$((before + 1))"
  check_contains "$tag outside: the log says why" "$(cat "$LITESTREAM_LOG_FILE")" "changed outside the VFS"
}

for ps in 4096 1024 65536; do
  run_workload wal $ps
  run_workload delete $ps
done
# The same over the S3 test server (our replica VFS and the Go VFS read it there).
if command -v node >/dev/null 2>&1 && [ -d "$srcdir/.npm-deps/node_modules/@20minutes/s3rver" ]; then
  start_test_s3
  run_workload wal 4096 s3
  run_workload delete 4096 s3
  s3_env_stop
else
  echo "# node or s3rver missing: the s3:// workloads are skipped"
fi
finish
