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
printf '\nThe write side: a primary writing through litestream-primary into a local replica,\n'
printf 'and a replica process following it live (VFS litestream, polling every 100 ms):\n'
rm -rf "$OUT/primary.db" "$OUT/primary.db-ltvfs" "$OUT/primary-replica"
PREP=file://$PWD/$OUT/primary-replica
primary() { # one primary process: the SQL, then the close uploads what is pending
  run sqlite3 :memory: ".load ./libltvfs" ".open 'file:$OUT/primary.db?vfs=litestream-primary&replica=$PREP'" "$@"
}
primary "PRAGMA journal_mode=WAL;" "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);" \
  "INSERT INTO notes(body) VALUES ('first note');" "PRAGMA litestream_sync;"
coproc FOLLOW { sqlite3 -batch :memory: 2>&1; }
printf '.load ./libltvfs\n.open file:follow?vfs=litestream&replica=%s&poll=100\n' "$PREP" >&"${FOLLOW[1]}"
follow() { # asks the replica process until it is at TXID $1 (at most 10 s)
  local want=$1 line i
  for ((i = 0; i < 100; i++)); do
    printf "SELECT litestream_txid() || ' ' || count(*) || ' notes: ' || group_concat(body, ', ') FROM notes;\n" >&"${FOLLOW[1]}"
    read -r -t 10 line <&"${FOLLOW[0]}" || break
    if [ "${line%% *}" = "$want" ]; then printf '  replica process sees TXID %s\n' "$line"; return; fi
    sleep 0.1
  done
  printf '  replica process: not at TXID %s within 10 s (last: %s)\n' "$want" "${line:-nothing}"
}
follow 0000000000000002
primary "INSERT INTO notes(body) VALUES ('second note'), ('third note');" "PRAGMA litestream_sync;"
follow 0000000000000003
primary "UPDATE notes SET body = upper(body) WHERE id = 1;" "PRAGMA litestream_sync;"
follow 0000000000000004
printf '.quit\n' >&"${FOLLOW[1]}" || true
wait "$FOLLOW_PID" 2>/dev/null || true
printf '\nAn earlier state of the primary, pinned (txid=2: before the second and third notes):\n'
run sqlite3 :memory: ".load ./libltvfs" ".open 'file:x?vfs=litestream&replica=$PREP&txid=2'" \
  "SELECT litestream_txid() AS txid, group_concat(body, ', ') AS notes FROM notes;"
printf '\nDone: restored databases are in %s/.\n' "$OUT"
