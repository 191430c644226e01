#!/usr/bin/env bash
# Installs the baselines' dependencies (idempotent): a Python venv with Tornado and matplotlib
# under bench/.venv, and the Node broadcaster's packages (npm ci) under bench/node-ws.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
if ! "$here/.venv/bin/python" -c 'import tornado, matplotlib' 2>/dev/null; then
  "$here/.venv/bin/pip" install --quiet -r "$here/requirements.txt"
fi
if [ ! -d "$here/node-ws/node_modules/ws" ]; then
  (cd "$here/node-ws" && npm ci --no-audit --no-fund --silent)
fi
echo "bench setup ok: $("$here/.venv/bin/python" -c 'import tornado; print("tornado", tornado.version)'), node $(node --version)"
