#!/usr/bin/env bash
# Makes everything the project needs on a fresh Debian machine: system packages, then .venv with the package and its
# dev tools. Safe to run again; a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system.sh
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
