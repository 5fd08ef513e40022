#!/bin/bash
# Integration test: the fixture replicas (tests/fixtures) over s3:// on the
# loopback S3 server (tests/s3/env.sh). Every fixture db is copied with
# tests/replica_copy into s3://$S3_BUCKET/<db> (the S3 layout
# <db>/0000/<name>.ltx is checked on the server's disk), then restored at
# every TXID of expected.tsv and at latest and checked exactly as
# tests/restore_fixtures.sh does (tests/lib_fixtures.sh). Error cases: a dead
# endpoint, a wrong secret, a missing bucket, a TXID not available. Interop
# with the real Litestream Go VFS over S3: (a) it reads a replica written by
# `ltvfs import`; (b) it writes a replica in write mode that `ltvfs restore`
# reads back (same .dump as a plain database given the same SQL).
#
# Run by `make check` from the build directory; standalone:
# `srcdir=/path/to/src tests/restore_s3.sh`.
# Environment overrides: LTVFS, REPLICA_COPY, SQLITE3, LTVFS_GO_VFS.
set -euo pipefail

srcdir=${top_srcdir:-${srcdir:-.}}
top_builddir=${top_builddir:-.}
LTVFS=${LTVFS:-$top_builddir/tools/ltvfs}
REPLICA_COPY=${REPLICA_COPY:-$top_builddir/tests/replica_copy}
SQLITE3=${SQLITE3:-sqlite3}
GOVFS=${LTVFS_GO_VFS:-$srcdir/.npm-deps/node_modules/litestream-vfs-linux-amd64/litestream-vfs.so}
FIXDIR=$(cd "$srcdir/tests/fixtures" && pwd)

. "$srcdir/tests/lib_fixtures.sh"
test_workdir restore_s3

require_sqlite3
if ! command -v node >/dev/null 2>&1; then
  echo "# node not found (needed by the test S3 server): skipping"
  exit 77
fi
for p in "$LTVFS" "$REPLICA_COPY"; do
  if [ ! -x "$p" ]; then
    notok "$p exists"
    finish
  fi
done

fixtures_load_queries
start_test_s3

s3_url() { echo "s3://$S3_BUCKET/$1?endpoint=$S3_ENDPOINT"; }

# ---- copy every fixture replica to S3 and check the layout ----
for db in $(cd "$FIXDIR" && ls -d */ | tr -d /); do
  rc=0
  "$REPLICA_COPY" "file://$FIXDIR/$db" "$(s3_url "$db")" >"$WORK/copy.out" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    notok "replica_copy $db to S3 (exit $rc)"
    head -10 "$WORK/copy.out" | diag
    continue
  fi
  ok "replica_copy $db to S3"
  want=$(cd "$FIXDIR/$db/ltx/0" && ls *.ltx | sed "s|^|$db/0000/|" | tr '\n' ' ')
  got=$(cd "$S3_ENV_DIR/data/$S3_BUCKET" && find "$db" -name '*.ltx._S3rver_object' |
    sed 's/\._S3rver_object$//' | sort | tr '\n' ' ')
  check "S3 keys of $db are $db/0000/<name>.ltx" "$got" "$want"
done
rc=0
lsout=$("$LTVFS" ls "$(s3_url main)" 2>&1) || rc=$?
check "ls s3 main exits 0" "$rc" 0
check_contains "ls s3 main shows the last TXID" "$lsout" 000000000000000b

# ---- every database at every TXID of expected.tsv, then at latest ----
restore_all_fixtures s3_url

# ---- shrink (see restore_fixtures.sh) ----
out=$WORK/shrink-latest.db
if restore_ok "restore shrink (latest)" "$out" "$(s3_url shrink)"; then
  check "shrink@latest page_count" "$("$SQLITE3" -batch "$out" 'PRAGMA page_count;' 2>&1)" 80
  check "shrink@latest integrity_check" "$("$SQLITE3" -batch "$out" 'PRAGMA integrity_check;' 2>&1 | join_rows)" ok
  check "shrink@latest t rows" "$("$SQLITE3" -batch "$out" 'SELECT count(*), sum(id), min(id), max(id) FROM t;' 2>&1)" \
    "1000|500500|1|1000"
  check "shrink@latest file size" "$(stat -c %s "$out")" $((80 * 4096))
fi

# ---- error cases ----
# expect_fail NAME OUTDIR CMD...: the command fails, leaves OUTDIR empty;
# its output goes to $WORK/err.out, its wall time (ms) to $elapsed_ms.
elapsed_ms=0
expect_fail() {
  local name=$1 dir=$2 rc=0 t0
  shift 2
  mkdir -p "$dir"
  t0=$(date +%s%N)
  "$@" >"$WORK/err.out" 2>&1 || rc=$?
  elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
  if [ $rc -ne 0 ] && [ $rc -ne 124 ]; then ok "$name fails (exit $rc, ${elapsed_ms} ms)"; else
    notok "$name fails (exit $rc, ${elapsed_ms} ms)"
    head -10 "$WORK/err.out" | diag
  fi
  check "$name leaves no file" "$(ls -A "$dir")" ""
}

# A dead endpoint: a port nothing listens on.
DEADPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
DEAD=http://127.0.0.1:$DEADPORT
expect_fail "restore from a dead endpoint" "$WORK/err1" \
  timeout 60 "$LTVFS" restore "s3://$S3_BUCKET/main?endpoint=$DEAD" -o "$WORK/err1/out.db"
if [ "$elapsed_ms" -lt 15000 ]; then ok "dead endpoint fails within 15 s (${elapsed_ms} ms)"; else
  notok "dead endpoint fails within 15 s (${elapsed_ms} ms)"
fi
check_contains "dead endpoint: the message names the endpoint" "$(cat "$WORK/err.out")" "127.0.0.1:$DEADPORT"

# A wrong secret.
BADSECRET=NotTheSecret-7f3a9c2e
expect_fail "restore with a wrong secret" "$WORK/err2" \
  env AWS_SECRET_ACCESS_KEY=$BADSECRET timeout 60 "$LTVFS" restore "$(s3_url main)" -o "$WORK/err2/out.db"
msg=$(cat "$WORK/err.out")
if [[ "$msg" == *403* ]] || [[ "$msg" == *SignatureDoesNotMatch* ]] || [[ "$msg" =~ [Aa]uth|[Cc]redential|[Ff]orbidden|[Dd]enied ]]; then
  ok "wrong secret: the message says 403 / auth"
else
  notok "wrong secret: the message says 403 / auth"
  diag <<<"$msg"
fi
if [[ "$msg" != *"$BADSECRET"* ]]; then ok "wrong secret: the message does not contain the secret"; else
  notok "wrong secret: the message does not contain the secret"
fi

# A bucket that does not exist.
expect_fail "restore from a missing bucket" "$WORK/err3" \
  timeout 60 "$LTVFS" restore "s3://no-such-bucket-ltvfs/main?endpoint=$S3_ENDPOINT" -o "$WORK/err3/out.db"
check_contains "missing bucket: the message names the bucket" "$(cat "$WORK/err.out")" no-such-bucket-ltvfs

# A path holding no replica.
expect_fail "restore from an empty S3 path" "$WORK/err4" \
  timeout 60 "$LTVFS" restore "$(s3_url no-such-replica)" -o "$WORK/err4/out.db"
check_contains "empty S3 path: the message names it" "$(cat "$WORK/err.out")" no-such-replica

# A TXID that no file ends at.
expect_fail "restore s3 main --txid ff" "$WORK/err5" \
  timeout 60 "$LTVFS" restore "$(s3_url main)" -o "$WORK/err5/out.db" --txid ff
check_contains "restore s3 main --txid ff says 'not available'" "$(cat "$WORK/err.out")" "not available"
# (An object deleted between listing and reading is not staged here.)

# ---- interop with the Litestream Go VFS over S3 ----
if [ ! -f "$GOVFS" ]; then
  echo "# Litestream Go VFS not found at $GOVFS: skipping the interop part"
  finish
fi
GOVFS=$(cd "$(dirname "$GOVFS")" && pwd)/$(basename "$GOVFS")
mkdir -p "$WORK/go"
# go_sql URL read|write: runs the SQL on stdin through the Go VFS.
go_sql() { go_vfs_sql "$1" "$2" "$WORK"; }
QUERIES="PRAGMA page_size;
SELECT type, name, tbl_name FROM sqlite_master ORDER BY type, name;
SELECT count(*), sum(id), sum(length(name)), sum(length(payload)) FROM t;
SELECT group_concat(id || ':' || name, ',') FROM (SELECT id, name FROM t ORDER BY id LIMIT 5);
SELECT count(*), sum(id) FROM t WHERE name >= 'm';
SELECT count(*), sum(length(payload)) FROM t WHERE length(payload) > 4000;
SELECT hex(sha3_query('SELECT * FROM t ORDER BY id'));
PRAGMA integrity_check;"
ROWS="INSERT INTO t(id, name, payload)
  SELECT value, substr('abcdefghijklmnopqrstuvwxyz', 1 + value % 26, 1) || lower(hex(sha3(value))),
         CAST(substr(hex(sha3(value)) || printf('%.*c', CASE WHEN value % 97 = 0 THEN 6000 ELSE value % 500 END, 'x'), 1, 8000) AS BLOB)
  FROM generate_series"

# (a) ltvfs import into S3, read by the Go VFS.
A=$WORK/a.db
printf '%s\n' "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, payload BLOB);" "$ROWS(1, 3000);" \
  "CREATE INDEX t_name ON t(name);" | "$SQLITE3" -batch "$A"
rc=0
"$LTVFS" import "$A" "$(s3_url go-a)" >"$WORK/run.out" 2>&1 || rc=$?
if [ $rc -eq 0 ]; then ok "import a.db into $(s3_url go-a)"; else
  notok "import a.db into S3 (exit $rc)"
  head -10 "$WORK/run.out" | diag
fi
want=$("$SQLITE3" -batch "$A" <<<"$QUERIES" 2>&1)
got=$(go_sql "$(s3_url go-a)" read <<<"$QUERIES" 2>&1 || true)
check "go vfs over S3 on our imported replica = sqlite3 on a.db" "$got" "$want"
check "go vfs over S3: litestream_txid() = 1" "$(go_sql "$(s3_url go-a)" read <<<'SELECT litestream_txid();' 2>&1 || true)" \
  0000000000000001

# (b) the Go VFS writes to S3 (one process per step), ltvfs restores.
step_sql() {
  case $1 in
  1) echo "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, payload BLOB);"; echo "$ROWS(1, 1500);" ;;
  2) echo "UPDATE t SET name = upper(name) WHERE id % 3 = 0;"; echo "CREATE INDEX t_name ON t(name);" ;;
  3) echo "DELETE FROM t WHERE id % 5 = 0;"; echo "$ROWS(1501, 2500);" ;;
  4) echo "UPDATE t SET payload = zeroblob(7000) WHERE id IN (1, 77, 1234);"; echo "DELETE FROM t WHERE id BETWEEN 100 AND 400;" ;;
  esac
}
BURL=$(s3_url go-b)
PLAIN=$WORK/b-plain.db
for k in 1 2 3 4; do
  rc=0
  step_sql "$k" | go_sql "$BURL" write >"$WORK/write$k.out" 2>&1 || rc=$?
  if [ $rc -ne 0 ] || [ -s "$WORK/write$k.out" ]; then
    notok "go vfs write step $k to S3 (exit $rc)"
    head -10 "$WORK/write$k.out" | diag
  else
    ok "go vfs write step $k to S3"
  fi
  step_sql "$k" | "$SQLITE3" -batch "$PLAIN"
  cp "$PLAIN" "$WORK/b-plain$k.db"
done
want=$(cd "$FIXDIR/.." && for i in 1 2 3 4; do printf 'go-b/0000/%016x-%016x.ltx ' "$i" "$i"; done)
got=$(cd "$S3_ENV_DIR/data/$S3_BUCKET" 2>/dev/null && find go-b -name '*.ltx._S3rver_object' |
  sed 's/\._S3rver_object$//' | sort | tr '\n' ' ' || true)
check "go vfs wrote one L0 file per step to S3" "$got" "$want"
dump_sha() { "$SQLITE3" "$1" .dump </dev/null 2>&1 | sha256sum | cut -d' ' -f1; }
for k in 1 2 3 4 latest; do
  out=$WORK/b-restore-$k.db
  if [ "$k" == latest ]; then
    s=4
    restore_ok "restore go vfs S3 replica at latest" "$out" "$BURL" || continue
  else
    s=$k
    restore_ok "restore go vfs S3 replica --txid $k" "$out" "$BURL" --txid "$k" || continue
  fi
  check "go vfs S3 replica @$k: image = plain db @step $s" "$(img_sha256 "$out")" "$(img_sha256 "$WORK/b-plain$s.db")"
  check "go vfs S3 replica @$k: dump = plain db @step $s" "$(dump_sha "$out")" "$(dump_sha "$WORK/b-plain$s.db")"
  check "go vfs S3 replica @$k: integrity_check" "$("$SQLITE3" -batch "$out" 'PRAGMA integrity_check;' 2>&1)" ok
done

finish
