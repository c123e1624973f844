#!/usr/bin/env bash
# Installs the Debian packages the pipeline, its demo and its tests need. Idempotent: when all are present it asks
# dpkg and exits, without apt. As root it runs apt-get; otherwise through sudo; without either it prints the one
# apt-get command to run as root and exits 1.
#
#   scripts/install-system.sh              install what is missing, apt's output on the terminal
#   scripts/install-system.sh --log FILE   one line saying what it installs; apt's output appended to FILE, and
#                                          FILE's last 30 lines when apt fails (what scripts/setup.sh uses)
#   scripts/install-system.sh --missing    print the missing packages (nothing when all are present), install nothing
#
# PYTHON (default python3) is the interpreter the project's .venv is made from. When it is Debian's own python3.X,
# python3.X-venv is needed too: Debian ships venv's ensurepip separately.
set -euo pipefail

log=""
mode=install
case "${1:-}" in
  --log) log=${2:?--log needs a file}; ;;
  --missing) mode=list ;;
  "") ;;
  *) echo "usage: $0 [--log FILE | --missing]" >&2; exit 2 ;;
esac

# ffmpeg/ffprobe: every audio step and most tests; redis-server: the broker the demo and tests start; espeak-ng: the
# demo's spoken samples; sox: audio tooling; chromium: the HTML report tests draw the report with headless chromium;
# fonts-dejavu-core: fonts for that drawing (a minimal system has none).
packages=(ffmpeg redis-server espeak-ng sox chromium fonts-dejavu-core)

PY=${PYTHON:-python3}
if py_path=$(command -v "$PY" 2>/dev/null); then
  py_real=$(readlink -f "$py_path")
  # Debian's python (a file dpkg knows) lacks ensurepip until python3.X-venv is installed; pyenv and other builds
  # bring their own.
  if dpkg-query -S "$py_real" >/dev/null 2>&1; then
    packages+=("$("$PY" -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])')")
  fi
else
  packages+=(python3 python3-venv)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "$mode" = list ]; then
  [ ${#missing[@]} -eq 0 ] || echo "${missing[*]}"
  exit 0
fi
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && { sudo -n true 2>/dev/null || [ -t 0 ]; }; then
    sudo=(sudo)
  else
    echo "setup: not root and no sudo; as root, run: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o Dpkg::Use-Pty=0)
if [ -z "$log" ]; then
  "${sudo[@]}" "${apt[@]}" update
  "${sudo[@]}" "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
  exit 0
fi

echo "setup: installing system packages: ${missing[*]}${sudo:+ (with sudo)}"
{
  echo "== $(date -Is) apt-get install ${missing[*]}"
  "${sudo[@]}" "${apt[@]}" update && "${sudo[@]}" "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
} >>"$log" 2>&1 </dev/null || {
  status=$?
  echo "setup: installing system packages failed (exit $status); the last 30 lines of $log:" >&2
  tail -n 30 "$log" >&2
  exit 1
}
