#!/usr/bin/env bash
# quickstart.sh: build ltvfs on this machine and show what it does on the
# bundled sample replica (a real Litestream file:// replica in
# tests/fixtures/main, 11 TXIDs), no cloud account needed.
set -euo pipefail
cd "$(dirname "$0")"
./bootstrap.sh

REPLICA=${1:-file://$PWD/tests/fixtures/main}
OUT=demo
mkdir -p "$OUT"
run() { printf '\n$ %s\n' "$*"; "$@"; }

run tools/ltvfs ls "$REPLICA"
run tools/ltvfs restore "$REPLICA" -o "$OUT/latest.db" --force
run sqlite3 "$OUT/latest.db" "SELECT count(*) AS rows, sum(id) AS sum_id FROM t; PRAGMA integrity_check;"
run tools/ltvfs restore "$REPLICA" -o "$OUT/txid4.db" --txid 4 --force
run sqlite3 "$OUT/txid4.db" "SELECT count(*) AS rows, sum(id) AS sum_id FROM t; PRAGMA integrity_check;"
printf '\nThe same from inside SQLite, through the loadable extension:\n'
run sqlite3 :memory: ".load ./libltvfs" \
  "SELECT ltvfs_restore('$REPLICA', '$OUT/sql.db', '2', 'force') AS txid;"
run sqlite3 "$OUT/sql.db" "SELECT count(*) FROM t;"
printf '\nNo restore at all: the replica itself as a live, read-only database (VFS litestream):\n'
run sqlite3 :memory: ".load ./libltvfs" \
  ".open 'file:app.db?vfs=litestream&replica=$REPLICA'" \
  "SELECT litestream_txid() AS txid, count(*) AS rows, sum(id) AS sum_id FROM t;"
run sqlite3 :memory: ".load ./libltvfs" \
  ".open 'file:app.db?vfs=litestream&replica=$REPLICA&txid=4'" \
  "SELECT litestream_txid() AS txid, count(*) AS rows FROM t; PRAGMA integrity_check;"
printf '\nDone: restored databases are in %s/.\n' "$OUT"
