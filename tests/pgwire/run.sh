#!/usr/bin/env bash
# psycopg 3 against a real viewcast: starts `viewcast serve` on free ports, runs the Python
# tests in this folder, stops the server. Installs psycopg from PyPI if it is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
if ! "$python" -c 'import psycopg' 2>/dev/null; then
  "$python" -m pip install --quiet "psycopg[binary]>=3.1"
fi
cd "$root"
cargo build --quiet -p viewcast
log="$(mktemp)"
./target/debug/viewcast serve --listen 127.0.0.1:0 --pgwire-listen 127.0.0.1:0 --tick-ms 20 >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  grep -q "pgwire listening on" "$log" && break
  sleep 0.1
done
addr="$(grep -o 'pgwire listening on [0-9.:]*' "$log" | awk '{print $4}')"
if [ -z "$addr" ]; then
  echo "server did not start:"; cat "$log"; exit 1
fi
VIEWCAST_PG_HOST="${addr%:*}" VIEWCAST_PG_PORT="${addr##*:}" "$python" "$here/test_psycopg.py"
