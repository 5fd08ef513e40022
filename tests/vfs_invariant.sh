#!/bin/bash
# Integration test: snapshot isolation of the "litestream" VFS under a live,
# independent writer, from many threads (tests/vfs_invariant.c).
#
# The writer is the real Litestream Go VFS in write mode (npm
# litestream-vfs-linux-amd64@0.5.17): an independent primary producing real
# Litestream L0 files. It runs one short sqlite3 process per commit batch
# (LITESTREAM_SYNC_INTERVAL=30s, so each process syncs exactly one LTX file
# when its connection closes): one long Go VFS process syncing every 100 ms
# is not usable, its connection reads "database disk image is malformed"
# after its own first sync. Each process is ~0.2 s, so the replica gets a
# new TXID about 4 times a second.
#
# 1. The Go VFS seeds accounts(id, balance, pad) with N accounts of 1000
#    each and an index on balance: TXID 1, sum(balance) = T.
# 2. tests/vfs_invariant starts: ltvfs_register(), 8 reader threads with one
#    connection each (poll=50) and 1 thread with two connections to the same
#    replica URL, all looping over read transactions (see the .c file for
#    what each asserts: sum and count on two access paths, one TXID per
#    transaction, no TXID going backwards per connection nor across the two
#    connections of one thread, litestream_lag() sane).
# 3. Once every thread has done one transaction, the writer runs for
#    $VFS_INVARIANT_SECONDS (10) seconds: each process commits 3 transfers
#    between random accounts (three SQLite transactions, one TXID) and every
#    third process also one transaction that moves 1 from each of the first
#    N/2 accounts to the others, touching every page of the table and of the
#    index (a view torn between two TXIDs cannot sum to T).
# 4. The writer's final TXID (`ltvfs ls`) goes into a file; every reader
#    connection must reach it within 20 s; every thread must have seen >= 5
#    distinct TXIDs. The final replica, restored with `ltvfs restore`, still
#    sums to T (so a failure is the reader's, not the writer's).
#
# Environment overrides: LTVFS, VFS_INVARIANT, LTVFS_GO_VFS, SQLITE3,
# VFS_INVARIANT_SECONDS.
set -euo pipefail

srcdir=${top_srcdir:-${srcdir:-.}}
top_builddir=${top_builddir:-.}
LTVFS=${LTVFS:-$top_builddir/tools/ltvfs}
INVARIANT=${VFS_INVARIANT:-$top_builddir/tests/vfs_invariant}
SQLITE3=${SQLITE3:-sqlite3}
GOVFS=${LTVFS_GO_VFS:-$srcdir/.npm-deps/node_modules/litestream-vfs-linux-amd64/litestream-vfs.so}
SECONDS_WRITING=${VFS_INVARIANT_SECONDS:-10}

. "$srcdir/tests/lib_fixtures.sh"
test_workdir vfs_invariant
mkdir -p "$WORK/go"

require_sqlite3
require_go_vfs
for p in "$LTVFS" "$INVARIANT"; do
  if [ ! -x "$p" ]; then
    notok "$p exists"
    finish
  fi
done

REP=$WORK/replica
URL=file://$REP
NACC=2000
TOTAL=$((NACC * 1000))

# go_write: runs the SQL on stdin through the Go VFS in write mode; it syncs
# one LTX file when the connection closes.
go_write() { go_vfs_sql "$URL" write "$WORK"; }
latest_txid() { "$LTVFS" ls "$1" 2>/dev/null | sed -n 's/^latest: \([0-9a-f]\{16\}\).*/\1/p'; }

# ---- 1. seed ----
rc=0
go_write >"$WORK/seed.out" 2>&1 <<EOF || rc=$?
CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad BLOB NOT NULL);
INSERT INTO accounts SELECT value, 1000, CAST(printf('%.*c', 100 + value % 50, 'p') AS BLOB)
  FROM generate_series(1, $NACC);
CREATE INDEX accounts_balance ON accounts(balance);
EOF
if [ $rc -ne 0 ] || [ -s "$WORK/seed.out" ]; then
  notok "go vfs seeds $NACC accounts (exit $rc)"
  head -10 "$WORK/seed.out" | diag
  finish
fi
check "go vfs seeds $NACC accounts: TXID 1" "$(latest_txid "$URL")" 0000000000000001

# ---- 2. readers ----
DONE=$WORK/final-txid
READY=$WORK/ready
timeout 90 "$INVARIANT" "$URL" --threads 8 --pairs 1 --poll 50 --accounts "$NACC" --total "$TOTAL" \
  --min-txids 5 --timeout 60 --final-timeout 20 --done-file "$DONE" --ready-file "$READY" \
  >"$WORK/readers.out" 2>"$WORK/readers.err" &
READERS=$!
for _ in $(seq 1 300); do
  [ -f "$READY" ] && break
  kill -0 "$READERS" 2>/dev/null || break
  sleep 0.1
done
if [ -f "$READY" ] && [ "$(cat "$READY")" == 9 ]; then
  ok "9 reader threads opened the replica and completed a first transaction"
else
  notok "9 reader threads opened the replica and completed a first transaction"
  cat "$WORK/readers.out" "$WORK/readers.err" 2>/dev/null | head -20 | diag
fi

# ---- 3. the writer ----
# transfers: the SQL of one writer process (one TXID).
transfers() {
  local _ a b amt
  for _ in 1 2 3; do
    a=$((RANDOM % NACC + 1))
    b=$((RANDOM % NACC + 1))
    amt=$((RANDOM % 500 + 1))
    echo "BEGIN;"
    echo "UPDATE accounts SET balance = balance - $amt WHERE id = $a;"
    echo "UPDATE accounts SET balance = balance + $amt WHERE id = $b;"
    echo "COMMIT;"
  done
  if [ $(($1 % 3)) -eq 0 ]; then
    echo "UPDATE accounts SET balance = balance + CASE WHEN id > $((NACC / 2)) THEN 1 ELSE -1 END;"
  fi
}
nproc_w=0
werr=0
start=$(date +%s%N)
end=$((start + SECONDS_WRITING * 1000000000))
if kill -0 "$READERS" 2>/dev/null; then
  while [ "$(date +%s%N)" -lt "$end" ]; do
    nproc_w=$((nproc_w + 1))
    rc=0
    transfers "$nproc_w" | go_write >"$WORK/write.out" 2>&1 || rc=$?
    if [ $rc -ne 0 ] || [ -s "$WORK/write.out" ]; then
      werr=$((werr + 1))
      cp "$WORK/write.out" "$WORK/write-err-$nproc_w.out"
    fi
    kill -0 "$READERS" 2>/dev/null || break
  done
fi
final=$(latest_txid "$URL")
elapsed=$((($(date +%s%N) - start) / 1000000))
echo "# writer: $nproc_w go vfs processes in $elapsed ms, final TXID $final"
check "go vfs writer: $nproc_w processes without an error" "$werr" 0
check "go vfs writer: one TXID per process" "$final" "$(printf '%016x' $((nproc_w + 1)))"
printf '%s\n' "$final" >"$DONE.tmp"
mv "$DONE.tmp" "$DONE"

# ---- 4. the readers' verdict ----
rc=0
wait "$READERS" || rc=$?
while IFS= read -r line; do
  case $line in
  "ok - "*) ok "${line#ok - }" ;;
  "not ok - "*) notok "${line#not ok - }" ;;
  "#"*) echo "$line" ;;
  esac
done <"$WORK/readers.out"
if [ $rc -eq 0 ]; then ok "vfs_invariant exits 0"; else
  notok "vfs_invariant exits 0 (exit $rc$([ $rc -eq 124 ] && echo ', killed by timeout'))"
fi
if [ -s "$WORK/readers.err" ]; then
  echo "# stderr of vfs_invariant (first lines):"
  head -10 "$WORK/readers.err" | diag
fi

# The writer kept the invariant (else the readers' failures would be its).
rc=0
"$LTVFS" restore "$URL" -o "$WORK/final.db" -q >"$WORK/restore.out" 2>&1 || rc=$?
if [ $rc -eq 0 ]; then
  check "restore of the final replica: count, sum, integrity" \
    "$("$SQLITE3" -batch "$WORK/final.db" 'SELECT count(*), sum(balance) FROM accounts; PRAGMA integrity_check;' 2>&1 | tr '\n' ' ')" \
    "$NACC|$TOTAL ok "
else
  notok "restore of the final replica (exit $rc)"
  head -10 "$WORK/restore.out" | diag
fi

finish
