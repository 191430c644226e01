#!/usr/bin/env bash
# Installs what the browser tests need: Debian's Chromium (never a browser download), fonts that
# cover the scripts editors' names use, and the harness's npm packages (playwright-core, ws).
# The page's own Vega packages are installed by the gateway's build.rs (`npm ci` in web/); this
# script installs them too so the fake server can serve the page without a cargo build.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
# Latin/Greek/Cyrillic and CJK glyphs, so screenshots show names instead of boxes.
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
[ -d /usr/share/fonts/opentype/noto ] || missing+=(fonts-noto-cjk)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi

command -v npm >/dev/null || { echo "setup.sh: npm (Node.js) is required" >&2; exit 1; }
(cd "$here" && npm ci --no-audit --no-fund)
(cd "$here/../../web" && npm ci --no-audit --no-fund)
