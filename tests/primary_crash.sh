#!/bin/bash
# Crash loop of the write-side VFS: kill -9 of the primary at random moments
# during commits, captures, uploads and the start-up snapshot, with
# synchronous=FULL, then restart; at the end a clean open drains the spool.
#
# The primary is tests/primary_writer.py (Python's sqlite3 module loading
# libltvfs, writing through litestream-primary into a file:// replica). It
# logs every commit it saw succeed. The database starts with 20 000 rows
# written by plain sqlite3, so the first open writes a start-up snapshot of
# several MB (the first round's kill lands in it). Rounds alternate
# sync_interval=0 and 200 ms batching, and WAL and rollback (DELETE)
# journal modes, and the writer checkpoints with TRUNCATE every 40 commits
# (a seal of the WAL). ROUNDS (default 24) kill -9s in all.
#
# After the drain:
#   - the L0 TXIDs of the replica are exactly 1..N (contiguous, none reused);
#   - `ltvfs restore` equals the database page for page (page-1 counters
#     aside);
#   - every commit the writer acknowledged is in the restored database.
set -euo pipefail
srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-$srcdir}
LTVFS=${LTVFS:-$top_builddir/tools/ltvfs}
LIB=${LTVFS_LIB:-$top_builddir/.libs/libltvfs.so}
SQLITE3=${SQLITE3:-sqlite3}
PY=/usr/bin/python3
ROUNDS=${ROUNDS:-24}
. "$srcdir/tests/lib_fixtures.sh"
test_workdir primary_crash
require_sqlite3
require_python_ext
export LITESTREAM_LOG_FILE=$WORK/ltvfs.log
DB=$WORK/app.db REP=$WORK/rep URL=file://$WORK/rep ACK=$WORK/ack.log
WRITER="$srcdir/tests/primary_writer.py"
: >"$ACK"

"$SQLITE3" -batch "$DB" "PRAGMA journal_mode=wal; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
  INSERT INTO t SELECT value, randomblob(200) FROM generate_series(1, 20000);" >/dev/null

# A random delay in ms between $1 and $2.
rand_ms() { echo $(($1 + RANDOM % ($2 - $1 + 1))); }
ms_sleep() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

kills=0
for ((round = 1; round <= ROUNDS; round++)); do
  if ((round % 2)); then params="&sync_interval=0"; else params="&sync_interval=200ms"; fi
  if ((round % 3 == 0)); then mode=delete; else mode=wal; fi
  if ((round == 1)); then delay=$(rand_ms 5 120); else delay=$(rand_ms 150 1200); fi
  "$PY" "$WRITER" "$LIB" "$DB" "$URL" "$ACK" --mode $mode --params "$params" \
    >"$WORK/writer.$round.out" 2>&1 &
  pid=$!
  ms_sleep "$delay"
  if kill -9 $pid 2>/dev/null; then kills=$((kills + 1)); fi
  wait $pid 2>/dev/null || true
done
check "kill -9 of a writing primary, $ROUNDS rounds" "$kills" "$ROUNDS"
acked=$(wc -l <"$ACK")
if [ "$acked" -gt 50 ]; then ok "the writer acknowledged $acked commits"; else notok "only $acked commits acknowledged"; fi

# The drain: a clean open and close (the close uploads what is pending).
if "$PY" "$WRITER" "$LIB" "$DB" "$URL" "$ACK" --commits 1 --params "&sync_interval=0" >"$WORK/drain.out" 2>&1; then
  ok "a clean open after the crashes drains the spool"
else
  notok "drain"; diag <"$WORK/drain.out"
fi

n=$(l0_contiguous "$URL")
if [[ "$n" =~ ^[0-9]+$ ]]; then ok "L0 TXIDs 1..$n, contiguous"; else notok "L0 TXIDs: $n"; fi
left=$(ls "$DB-ltvfs/ltx" | wc -l)
check "the spool is empty after the drain" "$left" 0

if restore_ok "restore the replica" "$WORK/r.db" "$URL"; then
  cp "$DB" "$WORK/copy.db"
  check "restore equals the database page for page" "$(img_sha256 "$WORK/r.db")" "$(img_sha256 "$WORK/copy.db")"
  check "restored database integrity" "$("$SQLITE3" -batch "$WORK/r.db" 'PRAGMA integrity_check')" ok
  missing=$($PY "$WRITER" --missing "$WORK/r.db" "$ACK")
  check "every acknowledged commit is in the replica" "$missing" 0
fi
grep -c 'snapshot at TXID' "$LITESTREAM_LOG_FILE" | sed 's/^/# snapshots logged: /' || true
finish
