#!/usr/bin/env bash
# Client-compatibility suite: real Kafka clients against a real `fjord` process.
# Creates compat/.venv from requirements.txt on first use; pass pytest arguments through.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/pytest ] || ! cmp -s requirements.txt .venv/requirements.txt; then
  echo "compat: installing Python clients into compat/.venv…" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -r requirements.txt
  cp requirements.txt .venv/requirements.txt
fi
export FJORD_BIN="${FJORD_BIN:-$(cd .. && pwd)/target/debug/fjord}"
if [ ! -x "$FJORD_BIN" ]; then
  echo "compat: $FJORD_BIN not found; build it first (cargo build -p fjord)" >&2
  exit 2
fi
exec .venv/bin/pytest -q "$@"
