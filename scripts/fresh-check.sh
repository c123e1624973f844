#!/usr/bin/env bash
# `make fresh-check`: proves that the README's two commands work on a fresh Debian 12 machine (issue 12).
#
# As root: builds (once, cached) a minimal Debian bookworm root with debootstrap from this machine's configured apt
# mirror, with nothing in it but git, ca-certificates, python3 and make; copies it; clones the committed tree (HEAD of
# this repository; uncommitted changes are not included) into the copy; and runs there, in a chroot:
#   1. `make demo` on an 80x24 terminal: must pass, and print fewer than 60 lines (apt and pip included);
#   2. `make demo` again, without network: must pass with no apt and no pip run (setup only checks);
#   3. `make test`: must pass.
# One line per step with its time; exit 0 only if every step passed. Logs and a summary are kept in the cache
# directory's logs/ (the run root too, for a look around, until the next check).
#
#   scripts/fresh-check.sh [--rebuild] [--cache DIR]
#     --rebuild    debootstrap the base root again (otherwise the cached one is reused)
#     --cache DIR  where the roots and logs live (default /var/tmp/sts-fresh-root, or FRESH_CACHE)
#
# Not part of .ci/run: it takes 15 minutes or more.
set -euo pipefail

SELF=$(readlink -f "$0")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
CACHE=${FRESH_CACHE:-/var/tmp/sts-fresh-root}
SUITE=bookworm

# inroot DIR COMMAND: a login-like root shell in the chroot with a clean environment (none of this machine's pip
# configuration or pyenv; 80x24 when a terminal is attached)
inroot() {
  local r=$1
  shift
  env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=xterm-256color LANG=C.UTF-8 COLUMNS=80 LINES=24 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    chroot "$r" /bin/bash -c "$*"
}
# in_tty DIR COMMAND: the same on an 80x24 pseudo-terminal (what a person at a terminal sees), output on stdout
in_tty() {
  local r=$1 cmd
  shift
  printf -v cmd '%q ' bash "$SELF" --inroot "$r" "stty cols 80 rows 24 2>/dev/null; $*"
  script -qefc "$cmd" /dev/null </dev/null
}
# internal entry points, for script(1) and unshare(1) to call back into
case "${1:-}" in
  --inroot) shift; inroot "$@"; exit ;;
  --tty) shift; in_tty "$@"; exit ;;
esac

rebuild=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild) rebuild=1 ;;
    --cache) CACHE=${2:?--cache needs a directory}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "fresh-check: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
CACHE=$(readlink -m "$CACHE")
[ "$(id -u)" -eq 0 ] || { echo "fresh-check: must run as root (debootstrap, chroot and mounts)" >&2; exit 1; }

BASE=$CACHE/base   # debootstrap + git ca-certificates python3 make; never used for a check itself
ROOT=$CACHE/run    # a copy of BASE that one check runs in
LOGS=$CACHE/logs
SRC=/root/sts-pipeline  # where the clone lives inside the root
mkdir -p "$CACHE" "$LOGS"
SUMMARY=$LOGS/summary.txt
: >"$SUMMARY"

say() { echo "fresh-check: $*" | tee -a "$SUMMARY"; }
elapsed() { local s=$(( $(date +%s) - $1 )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
tail_of() { echo "fresh-check: the last 30 lines of $1:" >&2; tail -n 30 "$1" | sed 's/^/    /' >&2; }

# --- the machine's configured mirror -------------------------------------------------------------------------------
# Prints "URI SUITE" for every enabled deb source in /etc/apt/sources.list and sources.list.d/*.{list,sources}.
apt_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } print $i, $(i + 1) }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush() { if (types ~ /(^| )deb( |$)/ && enabled !~ /^[Nn]o/) for (u in uris) for (s in suites) print uris[u], suites[s]
                            delete uris; delete suites; types = ""; enabled = "" }
         /^[ \t]*#/ { next }
         /^[ \t]*$/ { flush(); next }
         { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "") }
         key == "types" { types = $0 } key == "enabled" { enabled = $0 }
         key == "uris" { n = split($0, a, " "); for (i = 1; i <= n; i++) uris[i] = a[i] }
         key == "suites" { n = split($0, a, " "); for (i = 1; i <= n; i++) suites[i] = a[i] }
         END { flush() }' "$f"
  done
}
mirror_for() { apt_sources | awk -v s="$1" '$2 == s { print $1; exit }'; }
MIRROR=$(mirror_for "$SUITE")
SECURITY=$(mirror_for "$SUITE-security")
[ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
MIRROR=${MIRROR%/}
SECURITY=${SECURITY%/}

# --- mounts and processes in a root --------------------------------------------------------------------------------
mounted_under() { findmnt -rn -o TARGET | awk -v r="$1" 'index($0, r "/") == 1 || $0 == r'; }
mount_root() {  # mount_root DIR: /proc /sys /dev /dev/pts /dev/shm, and the host's resolv.conf
  local r=$1
  mount -t proc proc "$r/proc"
  mount -t sysfs sysfs "$r/sys" 2>/dev/null || mount --bind /sys "$r/sys"
  mount --bind /dev "$r/dev"
  mount --bind /dev/pts "$r/dev/pts"
  mount -t tmpfs -o mode=1777,nosuid,nodev shm "$r/dev/shm"
  rm -f "$r/etc/resolv.conf"
  cp -L /etc/resolv.conf "$r/etc/resolv.conf"
}
# This machine may reach the internet through an HTTPS proxy whose CA it trusts locally (/usr/local/share/
# ca-certificates, public certificates); a fresh machine on the same network would need the same, so the run root
# gets copies. Prints how many.
trust_local_cas() {
  local r=$1 n
  n=$(find /usr/local/share/ca-certificates -name '*.crt' 2>/dev/null | wc -l)
  if [ "$n" -gt 0 ]; then
    cp -a /usr/local/share/ca-certificates/. "$r/usr/local/share/ca-certificates/"
    inroot "$r" update-ca-certificates >/dev/null 2>&1 || { echo "fresh-check: update-ca-certificates failed" >&2; exit 1; }
  fi
  echo "$n"
}
kill_in_root() {  # processes whose root directory is DIR (redis-server, workers a failed run left behind)
  local r=$1 p pids=()
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$r" ] && pids+=("${p#/proc/}")
  done
  [ ${#pids[@]} -eq 0 ] && return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  sleep 2
  kill -KILL "${pids[@]}" 2>/dev/null || true
}
umount_root() {
  local r=$1 m
  [ -d "$r" ] || return 0
  kill_in_root "$r"
  for m in $(mounted_under "$r" | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}
remove_root() {  # never rm -rf a root with the host's /dev or /sys still mounted in it
  local r=$1
  [ -e "$r" ] || return 0
  umount_root "$r"
  if [ -n "$(mounted_under "$r")" ]; then
    echo "fresh-check: $r still has mounts, not removing it:" >&2
    mounted_under "$r" >&2
    exit 1
  fi
  rm -rf --one-file-system "$r"
}
MOUNTED=()
cleanup() {
  local r
  for r in "${MOUNTED[@]}"; do umount_root "$r"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. the base root ----------------------------------------------------------------------------------------------
build_base() {
  local t0 log=$LOGS/debootstrap.log tmp=$BASE.tmp
  t0=$(date +%s)
  : >"$log"
  if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap on this machine"
    { DEBIAN_FRONTEND=noninteractive apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
        --no-install-recommends debootstrap; } >>"$log" 2>&1 </dev/null || { say "FAIL installing debootstrap"; tail_of "$log"; exit 1; }
  fi
  remove_root "$tmp"
  say "debootstrap $SUITE (minbase) from $MIRROR into $BASE"
  if ! debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >>"$log" 2>&1 </dev/null; then
    say "FAIL debootstrap ($(elapsed "$t0"))"; tail_of "$log"; exit 1
  fi
  {
    echo "deb $MIRROR $SUITE main"
    echo "deb $MIRROR $SUITE-updates main"
    [ -z "$SECURITY" ] || echo "deb $SECURITY $SUITE-security main"
  } >"$tmp/etc/apt/sources.list"
  MOUNTED+=("$tmp")
  mount_root "$tmp"
  say "installing git ca-certificates python3 make (only these) in it"
  if ! inroot "$tmp" 'export DEBIAN_FRONTEND=noninteractive; apt-get update &&
        apt-get install -y --no-install-recommends git ca-certificates python3 make && apt-get clean &&
        rm -rf /var/lib/apt/lists/*' >>"$log" 2>&1 </dev/null; then
    say "FAIL installing git ca-certificates python3 make ($(elapsed "$t0"))"; tail_of "$log"; exit 1
  fi
  umount_root "$tmp"
  rm -f "$tmp/etc/resolv.conf"
  remove_root "$BASE"
  mv "$tmp" "$BASE"
  touch "$CACHE/base.ok"
  say "ok  base root ($(elapsed "$t0"))"
}

t_all=$(date +%s)
say "checking $(git -C "$REPO" rev-parse --short HEAD) ($(git -C "$REPO" log -1 --format=%s HEAD | cut -c1-60)) of $REPO"
[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no)" ] ||
  say "note: uncommitted changes in $REPO are not part of the check"
if [ "$rebuild" -eq 1 ] || [ ! -f "$CACHE/base.ok" ] || [ ! -x "$BASE/usr/bin/python3" ]; then
  rm -f "$CACHE/base.ok"
  build_base
else
  say "ok  base root (cached in $BASE; --rebuild to make it again)"
fi

# --- 2. a copy of it, with the clone -------------------------------------------------------------------------------
t0=$(date +%s)
remove_root "$ROOT"
cp -a "$BASE" "$ROOT"
sha=$(git -C "$REPO" rev-parse HEAD)
if ! { git clone -q --no-hardlinks "$REPO" "$ROOT$SRC" && git -C "$ROOT$SRC" checkout -q --detach "$sha"; } \
    >"$LOGS/clone.log" 2>&1; then
  say "FAIL copying the root and cloning"; tail_of "$LOGS/clone.log"; exit 1
fi
MOUNTED+=("$ROOT")
mount_root "$ROOT"
cas=$(trust_local_cas "$ROOT")
say "ok  fresh root copied (+ this machine's $cas local CA certificates), $sha cloned into $SRC ($(elapsed "$t0"))"

failed=0

# --- 3. the first make demo ----------------------------------------------------------------------------------------
t0=$(date +%s)
if in_tty "$ROOT" "cd $SRC && make demo" >"$LOGS/demo-1.log" 2>&1; then ok=1; else ok=0; fi
lines=$(tr -cd '\n' <"$LOGS/demo-1.log" | wc -c)
if [ "$ok" -eq 1 ]; then
  say "ok  make demo, first run ($(elapsed "$t0"), $lines lines)"
else
  say "FAIL make demo, first run ($(elapsed "$t0"), $lines lines)"; tail_of "$LOGS/demo-1.log"; failed=1
fi
if [ "$lines" -ge 60 ]; then
  say "FAIL the first make demo printed $lines lines (the issue asks for fewer than 60): $LOGS/demo-1.log"; failed=1
fi

# --- 4. the second make demo: no apt, no pip, no network -----------------------------------------------------------
t0=$(date +%s)
fingerprint() {
  local f
  for f in var/log/apt/history.log var/log/dpkg.log "${SRC#/}/.setup.log"; do
    if [ -f "$ROOT/$f" ]; then echo "$f $(stat -c '%s %Y' "$ROOT/$f")"; else echo "$f absent"; fi
  done
  find "$ROOT/var/lib/apt/lists" "$ROOT/var/cache/apt" "$ROOT$SRC/.venv" -maxdepth 1 -printf '%p %T@\n' 2>/dev/null | sort
  find "$ROOT/root/.cache/pip" -type f 2>/dev/null | wc -l
}
before=$(fingerprint)
offline=""
if command -v unshare >/dev/null && command -v ip >/dev/null && unshare -n true 2>/dev/null; then
  offline=", offline"
  printf -v cmd '%q ' bash "$SELF" --tty "$ROOT" "cd $SRC && make demo"
  run2() { unshare -n bash -c "ip link set lo up && exec $cmd"; }
else
  run2() { in_tty "$ROOT" "cd $SRC && make demo"; }
fi
if run2 >"$LOGS/demo-2.log" 2>&1; then ok=1; else ok=0; fi
after=$(fingerprint)
lines2=$(tr -cd '\n' <"$LOGS/demo-2.log" | wc -c)
setup_lines=$(tr -d '\r' <"$LOGS/demo-2.log" | grep -c '^setup:' || true)
if [ "$ok" -eq 1 ] && [ "$before" = "$after" ] && [ "$setup_lines" -eq 0 ]; then
  say "ok  make demo, second run$offline: no apt, no pip ($(elapsed "$t0"), $lines2 lines)"
else
  say "FAIL make demo, second run$offline ($(elapsed "$t0"), $lines2 lines, $setup_lines setup lines)"
  [ "$before" = "$after" ] || { echo "fresh-check: apt or pip state changed:" >&2; diff <(echo "$before") <(echo "$after") >&2 || true; }
  tail_of "$LOGS/demo-2.log"; failed=1
fi

# --- 5. make test --------------------------------------------------------------------------------------------------
t0=$(date +%s)
if inroot "$ROOT" "cd $SRC && make test" >"$LOGS/test.log" 2>&1 </dev/null; then ok=1; else ok=0; fi
result=$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$LOGS/test.log" | tail -n 1 | tr -d '=' | sed 's/^ *//; s/ *$//')
if [ "$ok" -eq 1 ]; then
  say "ok  make test ($(elapsed "$t0"): ${result:-no pytest summary})"
else
  say "FAIL make test ($(elapsed "$t0"): ${result:-no pytest summary})"; tail_of "$LOGS/test.log"; failed=1
fi

umount_root "$ROOT"
if [ "$failed" -eq 0 ]; then
  say "PASS in $(elapsed "$t_all"); logs in $LOGS"
else
  say "FAILED in $(elapsed "$t_all"); logs in $LOGS, the root in $ROOT"
fi
exit "$failed"
