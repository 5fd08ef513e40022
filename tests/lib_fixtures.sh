# tests/lib_fixtures.sh: shared helpers of the fixture restore tests
# (tests/restore_fixtures.sh over file://, tests/restore_s3.sh over s3://).
# Sourced from bash; the caller sets LTVFS, SQLITE3, FIXDIR (the fixtures
# directory) and WORK (a scratch directory) before calling any function.
#
# TAP-like reporting: ok/notok print "ok - ..."/"not ok - ..." and count;
# finish prints "N passed, M failed" and exits 1 on any failure.

pass=0
fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
notok() { echo "not ok - $*"; fail=$((fail + 1)); }
diag() { sed 's/^/#   /'; }
finish() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ] || exit 1
  exit 0
}
# check NAME GOT WANT
check() {
  if [ "$2" == "$3" ]; then
    ok "$1"
  else
    notok "$1"
    printf 'got:  %s\nwant: %s\n' "$2" "$3" | cut -c1-400 | diag
  fi
}
# check_contains NAME HAYSTACK NEEDLE
check_contains() {
  if [[ "$2" == *"$3"* ]]; then
    ok "$1"
  else
    notok "$1"
    printf 'expected to contain: %s\ngot: %s\n' "$3" "$2" | cut -c1-400 | diag
  fi
}

# ---- the prologue every test script shares ----

# test_workdir NAME: a fresh scratch directory $top_builddir/tests/tmp/NAME,
# absolute, in WORK.
test_workdir() {
  WORK=${top_builddir:-.}/tests/tmp/$1
  rm -rf "$WORK"
  mkdir -p "$WORK"
  WORK=$(cd "$WORK" && pwd)
  # The replica VFS keeps a local image per replica (on by default): each
  # test's images live in its own fresh directory, never in ~/.cache.
  export LITESTREAM_CACHE_DIR=$WORK/cache
}
# require_sqlite3: skips the test (exit 77) without the sqlite3 shell.
require_sqlite3() {
  if ! command -v "$SQLITE3" >/dev/null 2>&1; then
    echo "# sqlite3 shell not found: skipping"
    exit 77
  fi
}
# require_go_vfs: skips the test without the Litestream Go VFS at $GOVFS;
# makes GOVFS absolute.
require_go_vfs() {
  if [ ! -f "$GOVFS" ]; then
    echo "# Litestream Go VFS not found at $GOVFS (run check.sh or set LTVFS_GO_VFS): skipping"
    exit 77
  fi
  GOVFS=$(cd "$(dirname "$GOVFS")" && pwd)/$(basename "$GOVFS")
}

# go_vfs_sql URL read|write DIR: runs the SQL on stdin through the real
# Litestream Go VFS ($GOVFS) on the replica URL, in DIR/go (its buffer and
# x.db live there; its log goes to DIR/go.log, off stdout). In write mode it
# syncs one LTX file when the connection closes (the sync interval is 30 s),
# so each call is one commit batch: a long-lived Go VFS writer corrupts its
# own view after its first sync. Run with AWS_CA_BUNDLE unset (it breaks the
# Go S3 client) and under a timeout.
go_vfs_sql() {
  local url=$1 mode=$2 dir=$3
  local -a envs=("LITESTREAM_REPLICA_URL=$url" "LITESTREAM_LOG_FILE=$dir/go.log")
  if [ "$mode" == write ]; then
    envs+=(LITESTREAM_WRITE_ENABLED=true LITESTREAM_SYNC_INTERVAL=30s
      "LITESTREAM_BUFFER_PATH=$dir/go/buffer")
  fi
  mkdir -p "$dir/go"
  (
    cd "$dir/go"
    { printf '.load %s\n.open file:x.db?vfs=litestream\n' "$GOVFS"; cat; } |
      env -u AWS_CA_BUNDLE "${envs[@]}" timeout 60 "$SQLITE3" -batch
  )
}

# start_test_s3: sources tests/s3/env.sh and starts the loopback S3 server
# (ok), or reports why not (not ok, its output) and finishes the test.
start_test_s3() {
  . "$srcdir/tests/s3/env.sh"
  if ! s3_env_start >"$WORK/s3env.out" 2>&1; then
    notok "start the test S3 server"
    diag <"$WORK/s3env.out"
    finish
  fi
  ok "start the test S3 server ($S3_ENDPOINT)"
}

# sqlite3 rows joined with " ; " (the convention of expected.tsv).
join_rows() { awk 'NR > 1 { printf " ; " } { printf "%s", $0 } END { print "" }'; }

# sha256 of the database file with page-1 bytes 24..27 and 92..95 zeroed.
img_sha256() {
  python3 - "$1" <<'PYEOF'
import hashlib, sys
b = bytearray(open(sys.argv[1], 'rb').read())
b[24:28] = bytes(4)
b[92:96] = bytes(4)
print(hashlib.sha256(b).hexdigest())
PYEOF
}

# fixtures_load_queries: fills SQL[name] from $FIXDIR/queries.tsv.
declare -A SQL
fixtures_load_queries() {
  local name sql
  while IFS=$'\t' read -r name sql; do
    [ "$name" == check ] && continue
    SQL[$name]=$sql
  done <"$FIXDIR/queries.tsv"
}

# fixtures_dbs: the databases with `restore` rows in expected.tsv, in order.
fixtures_dbs() {
  awk -F'\t' 'NR > 1 && $3 == "restore" { print $1 }' "$FIXDIR/expected.tsv" | awk '!seen[$0]++'
}
# fixtures_txids DB: the TXIDs of DB's `restore` rows, ascending.
fixtures_txids() {
  awk -F'\t' -v d="$1" '$1 == d && $3 == "restore" { print $2 }' "$FIXDIR/expected.tsv" | sort -u
}

# run_check DB CHECK: prints the result in expected.tsv's form.
run_check() {
  local db=$1 c=$2
  case $c in
  dump_sha256) "$SQLITE3" "$db" .dump </dev/null 2>&1 | sha256sum | cut -d' ' -f1 ;;
  img_sha256) img_sha256 "$db" ;;
  *) "$SQLITE3" -batch "$db" "${SQL[$c]}" </dev/null 2>&1 | join_rows ;;
  esac
}

# restore_ok NAME OUT URL [ARGS...]: restores, records ok/not ok; returns 1 on failure.
restore_ok() {
  local name=$1 out=$2 url=$3
  shift 3
  rm -f "$out"
  local rc=0
  "$LTVFS" restore "$url" -o "$out" "$@" >"$WORK/restore.out" 2>"$WORK/restore.err" || rc=$?
  if [ $rc -eq 0 ] && [ -f "$out" ]; then
    ok "$name"
    return 0
  fi
  notok "$name (exit $rc)"
  cat "$WORK/restore.out" "$WORK/restore.err" | head -20 | diag
  return 1
}

# verify_against DB LABEL DBNAME TXID: every `restore` row of expected.tsv for
# (DBNAME, TXID) checked on DB.
verify_against() {
  local out=$1 label=$2 dbname=$3 txid=$4 c want got
  # The image first, before anything else opens the file.
  while IFS=$'\t' read -r c want; do
    got=$(run_check "$out" "$c")
    check "$label $c" "$got" "$want"
  done < <(awk -F'\t' -v d="$dbname" -v t="$txid" \
    '$1 == d && $2 == t && $3 == "restore" { print ($4 == "img_sha256" ? 0 : 1) "\t" $4 "\t" $5 }' \
    "$FIXDIR/expected.tsv" | sort -s -t$'\t' -k1,1 | cut -f2-)
  # The file is exactly page_count pages of the SQLite page size.
  local size pc ps
  size=$(stat -c %s "$out")
  pc=$("$SQLITE3" -batch "$out" 'PRAGMA page_count;' 2>&1)
  ps=$("$SQLITE3" -batch "$out" 'PRAGMA page_size;' 2>&1)
  check "$label file size = page_count * page_size" "$size" "$((pc * ps))"
}

# restore_all_fixtures URL_OF: every database at every TXID of expected.tsv,
# then at latest; URL_OF is a function printing the replica URL of a db name.
restore_all_fixtures() {
  local url_of=$1 db txids txid last out url
  for db in $(fixtures_dbs); do
    url=$("$url_of" "$db")
    txids=$(fixtures_txids "$db")
    last=
    for txid in $txids; do
      out=$WORK/$db-$txid.db
      if restore_ok "restore $db --txid $txid" "$out" "$url" --txid "$txid"; then
        verify_against "$out" "$db@$txid" "$db" "$txid"
      fi
      last=$txid
    done
    out=$WORK/$db-latest.db
    if restore_ok "restore $db (latest)" "$out" "$url"; then
      verify_against "$out" "$db@latest(=$last)" "$db" "$last"
    fi
  done
}

# ---- batching many checks into one sqlite3 process ----
# sql_sections < "name<TAB>sql" lines: the sqlite3 input that prints
# "@@name" before each statement, so one process answers many checks.
sql_sections() {
  local n q
  while IFS=$'\t' read -r n q; do
    [ -n "$n" ] || continue
    printf '.print @@%s\n%s\n' "$n" "$q"
  done
}
# parse_sections < sqlite3 output: "name<TAB>rows joined with ' ; '" lines.
parse_sections() {
  awk '/^@@/ { if (n != "") print n "\t" r; n = substr($0, 3); r = ""; first = 1; next }
       n != "" { r = first ? $0 : r " ; " $0; first = 0 }
       END { if (n != "") print n "\t" r }'
}
# section FILE NAME: the value of NAME in a parse_sections output (first match).
section() { awk -F'\t' -v n="$2" '$1 == n { sub(/^[^\t]*\t/, ""); print; exit }' "$1"; }
# fixtures_expected DB TXID: "check<TAB>want" of every `restore` row of
# expected.tsv for (DB, TXID).
fixtures_expected() {
  awk -F'\t' -v d="$1" -v t="$2" '$1 == d && $2 == t && $3 == "restore" { print $4 "\t" $5 }' \
    "$FIXDIR/expected.tsv"
}
# uri_escape STRING: STRING %-encoded for use as a URI parameter value
# (SQLite decodes %HH in file: URIs).
uri_escape() {
  local s=$1 out= c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
    [A-Za-z0-9._~/:-]) out+=$c ;;
    *) out+=$(printf '%%%02X' "'$c") ;;
    esac
  done
  printf '%s\n' "$out"
}

# ---- the primary's replicas (tests/primary_*.sh) ----
# l0_contiguous URL: "N" when the L0 files of the replica are exactly
# [1,1] .. [N,N] (from `ltvfs ls`), else what is wrong ("gap at K: T", or a
# file that is not [T,T]). 0 for an empty or missing replica.
l0_contiguous() {
  "$LTVFS" ls "$1" 2>/dev/null | awk '$1 == "0" { print $2, $3 }' |
    while read -r a b; do
      [ "$a" == "$b" ] || echo "not-L0-shaped:$a-$b"
      echo $((16#$a))
    done | sort -n |
    awk '{ k++; if ($1 != k) { print "gap at " k ": " $1; exit 1 } } END { print k + 0 }' || true
}
# require_python_ext: skips the test unless /usr/bin/python3's sqlite3
# module can load extensions (the application the primary tests run).
require_python_ext() {
  /usr/bin/python3 -c 'import sqlite3; sqlite3.connect(":memory:").enable_load_extension(True)' 2>/dev/null || {
    echo "# /usr/bin/python3 cannot load SQLite extensions: skipping"
    exit 77
  }
}
