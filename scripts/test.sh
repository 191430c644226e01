#!/usr/bin/env bash
# The test suite, as CI runs it: formatting, lints, unit and integration tests, the SQL logic
# test sample, and the real-browser test against a real server. Installs what it needs
# (Debian's chromium, npm packages) when missing. Usage: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n=== %s ===\n' "$*"; }

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "browser test prerequisites"
tests/browser/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "psycopg 3 against a real server (pgwire)"
tests/pgwire/run.sh

step "browser test (headless Chromium against a real server)"
tests/browser/run.sh
