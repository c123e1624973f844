#!/usr/bin/env bash
# Makes everything the project needs on a fresh Debian machine: system packages (scripts/install-system.sh), then
# .venv with the package and its dev tools. Safe to run again: a run with everything in place only checks (dpkg, the
# venv's pip, a stamp of pyproject.toml) and prints nothing. A .venv that does not work (a half-made one from an
# interrupted run, a deleted pip) is removed and made again.
#
# One line per step it does; apt's and pip's output goes to .setup.log (SETUP_LOG to move it), and its last 30 lines
# are printed when a step fails. PYTHON (default python3) is the interpreter .venv is made from.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHON=$PY
LOG=${SETUP_LOG:-$PWD/.setup.log}

started=0
begin() {  # the first step of a run starts the log afresh and says where it is
  if [ "$started" -eq 0 ]; then
    started=1
    : >"$LOG"
    echo "setup: apt and pip output goes to $LOG"
  fi
}
run() {  # run STEP-NAME COMMAND...: the command's output into the log; on failure, the log's tail and exit 1
  local step=$1
  shift
  echo "== $(date -Is) $*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1 </dev/null; then
    echo "setup: $step failed; the last 30 lines of $LOG:" >&2
    tail -n 30 "$LOG" >&2
    exit 1
  fi
}

if [ -n "$(bash scripts/install-system.sh --missing)" ]; then
  begin
  bash scripts/install-system.sh --log "$LOG"
fi

if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  begin
  if [ -e .venv ]; then
    echo "setup: .venv does not work (.venv/bin/python -m pip fails): removing it and creating it again"
    rm -rf .venv
  else
    echo "setup: creating .venv ($("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])' 2>/dev/null || echo "$PY"))"
  fi
  run "creating .venv" "$PY" -m venv .venv
  if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then  # e.g. made with --without-pip by a Python lacking it
    rm -rf .venv
    echo "setup: $PY made a .venv without a working pip; the last 30 lines of $LOG:" >&2
    tail -n 30 "$LOG" >&2
    exit 1
  fi
fi

stamp=.venv/.installed-$(sha256sum <pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  begin
  echo "setup: installing the package and its dev tools into .venv (pip)"
  run "pip install" .venv/bin/python -m pip install --upgrade pip
  run "pip install" .venv/bin/python -m pip install -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
