#!/usr/bin/env bash
# Runs the browser tests: the page tests against a real viewcast server (one fresh server per
# test file, on a free port, running the demo's SQL with a load generator that stops after 4,000
# events so the page can be compared with SQL at a quiet end state), and the client-library and
# protocol-violation tests against the fake server (they need its fault-injection hooks).
# Assumes tests/browser/setup.sh has run. Usage: tests/browser/run.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
cargo build -p viewcast --quiet
bin="${CARGO_TARGET_DIR:-$root/target}/debug/viewcast"

quiet_sql="$(mktemp --suffix=.sql)"
sed 's/EVENTS PER SECOND 200, SEED 7/EVENTS PER SECOND 250, SEED 7, MAX EVENTS 4000/' \
  "$root/crates/viewcast/src/demo.sql" >"$quiet_sql"
grep -q "MAX EVENTS 4000" "$quiet_sql" || { echo "run.sh: demo.sql no longer has the expected source options" >&2; exit 1; }

# start_server runs in a command substitution (a subshell): it hands the pid back through a file.
pidfile="$(mktemp)"
server_pid=""
# The server is not this shell's child (see above), so it is killed and polled, not waited for.
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  server_pid=""
}
trap 'stop_server; rm -f "$quiet_sql" "$pidfile"' EXIT

start_server() {
  local log; log="$(mktemp)"
  "$bin" serve --listen 127.0.0.1:0 --pgwire-listen 127.0.0.1:0 --sql "$quiet_sql" >"$log" 2>&1 &
  server_pid=$!
  echo "$server_pid" >"$pidfile"
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
for t in demo.test.mjs dashboard.test.mjs a11y.test.mjs; do
  url="$(start_server)"
  server_pid="$(cat "$pidfile")"
  echo "== $t against $url"
  VIEWCAST_URL="$url" node --test --test-concurrency=1 "$t"
  stop_server
done
echo "== client and protocol tests against the fake server"
node --test --test-concurrency=1 client.test.mjs protocol.test.mjs
