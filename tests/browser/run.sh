#!/usr/bin/env bash
# Runs the browser tests: the page tests against a real viewcast server (one fresh server per
# test file, on a free port, running tests/browser/demo-quiet.sql), and the client-library and
# protocol-violation tests against the fake server (they need its fault-injection hooks).
# Assumes tests/browser/setup.sh has run. Usage: tests/browser/run.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
cargo build -p viewcast --quiet
bin="${CARGO_TARGET_DIR:-$root/target}/debug/viewcast"

server_pid=""
stop_server() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null; server_pid=""; }
trap stop_server EXIT

start_server() {
  local log; log="$(mktemp)"
  "$bin" serve --listen 127.0.0.1:0 --pgwire-listen 127.0.0.1:0 --sql "$here/demo-quiet.sql" >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do
    url="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -n1 || true)"
    if [ -n "$url" ]; then echo "$url"; return 0; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then cat "$log" >&2; return 1; fi
    sleep 0.1
  done
  cat "$log" >&2
  return 1
}

cd "$here"
for t in demo.test.mjs dashboard.test.mjs; do
  url="$(start_server)"
  echo "== $t against $url"
  VIEWCAST_URL="$url" node --test --test-concurrency=1 "$t"
  stop_server
done
echo "== client and protocol tests against the fake server"
node --test --test-concurrency=1 client.test.mjs protocol.test.mjs
