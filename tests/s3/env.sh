# tests/s3/env.sh: start a loopback S3 server (and the fault proxy in front
# of it) for a test script. Source it from bash, then:
#
#   . tests/s3/env.sh
#   s3_env_start [bucket]      # default bucket "ltvfs-test"
#   ... use $S3_REPLICA_URL, $S3_PROXY_URL, s3_fault 503 n=3 ...
#   s3_env_stop                # also run on EXIT unless the caller had an EXIT trap
#
# s3_env_start picks free ports (the servers bind port 0 and print theirs),
# keeps their data, logs and PIDs under tests/tmp/s3.XXXXXX (in the build
# tree: $top_builddir, else the current directory), and exports:
#   S3_BUCKET, S3_ENDPOINT (the server), S3_PROXY_ENDPOINT (the fault proxy),
#   S3_FAULT_URL (the proxy's control endpoint), S3_REPLICA_URL and
#   S3_PROXY_URL (s3:// replica URLs through each), and the credentials the
#   server accepts (AWS_ACCESS_KEY_ID=S3RVER, AWS_SECRET_ACCESS_KEY=S3RVER,
#   AWS_REGION=us-east-1).
# s3_env_stop kills exactly the two PIDs it started (never by name), waits
# for them and removes the directory; it is idempotent, so calling it from a
# trap and again by hand is fine. The servers also exit by themselves when
# the shell that started them is gone (--parent-pid).
#
# Needs node (run with --openssl-legacy-provider, see server.js) and
# @20minutes/s3rver@5.0.0 in .npm-deps (check.sh installs it).

_s3_env_src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Waits up to 20 s for "NAME listening on http://127.0.0.1:PORT" in log $1;
# prints PORT.
_s3_env_port() {
  local log=$1 pid=$2 i line
  for i in $(seq 1 200); do
    line=$(grep -m1 -o 'listening on http://127\.0\.0\.1:[0-9]*' "$log" 2>/dev/null || true)
    if [ -n "$line" ]; then
      echo "${line##*:}"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "s3_env: server did not start; its log ($log):" >&2
  cat "$log" >&2
  return 1
}

s3_env_start() {
  local bucket=${1:-ltvfs-test} base port pport
  base=${top_builddir:-$PWD}/tests/tmp
  mkdir -p "$base" || return 1
  S3_ENV_DIR=$(mktemp -d "$base/s3.XXXXXX") || return 1
  export S3_ENV_DIR

  node --openssl-legacy-provider "$_s3_env_src/server.js" --port 0 \
    --dir "$S3_ENV_DIR/data" --bucket "$bucket" --parent-pid $$ \
    >"$S3_ENV_DIR/server.log" 2>&1 &
  S3_ENV_SERVER_PID=$!
  echo "$S3_ENV_SERVER_PID" >"$S3_ENV_DIR/server.pid"
  port=$(_s3_env_port "$S3_ENV_DIR/server.log" "$S3_ENV_SERVER_PID") || { s3_env_stop; return 1; }

  node "$_s3_env_src/faultproxy.js" --port 0 --upstream "127.0.0.1:$port" --parent-pid $$ \
    >"$S3_ENV_DIR/proxy.log" 2>&1 &
  S3_ENV_PROXY_PID=$!
  echo "$S3_ENV_PROXY_PID" >"$S3_ENV_DIR/proxy.pid"
  pport=$(_s3_env_port "$S3_ENV_DIR/proxy.log" "$S3_ENV_PROXY_PID") || { s3_env_stop; return 1; }

  export S3_ENV_SERVER_PID S3_ENV_PROXY_PID
  export S3_BUCKET=$bucket
  export S3_ENDPOINT=http://127.0.0.1:$port
  export S3_PROXY_ENDPOINT=http://127.0.0.1:$pport
  export S3_FAULT_URL=$S3_PROXY_ENDPOINT/__fault
  export S3_REPLICA_URL="s3://$bucket/replica?endpoint=$S3_ENDPOINT"
  export S3_PROXY_URL="s3://$bucket/replica?endpoint=$S3_PROXY_ENDPOINT"
  export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
  if [ -z "$(trap -p EXIT)" ]; then
    trap s3_env_stop EXIT
  fi
}

# s3_fault MODE [key=value]...: sets the proxy's fault, e.g.
#   s3_fault 503 n=3      s3_fault latency ms=200      s3_fault none
s3_fault() {
  local q="mode=$1" kv
  shift
  for kv in "$@"; do q="$q&$kv"; done
  curl -fsS "$S3_FAULT_URL/set?$q"
}

s3_env_stop() {
  local pid
  for pid in ${S3_ENV_PROXY_PID:-} ${S3_ENV_SERVER_PID:-}; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  S3_ENV_PROXY_PID= S3_ENV_SERVER_PID=
  if [ -n "${S3_ENV_DIR:-}" ] && [ -d "$S3_ENV_DIR" ]; then
    rm -rf "$S3_ENV_DIR"
  fi
  S3_ENV_DIR=
  return 0
}
