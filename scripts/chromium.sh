#!/usr/bin/env bash
# Headless Chromium for the web view's browser test (test/ui.test.ts drives it with playwright-core).
#
#   scripts/chromium.sh path      prints the browser binary's path, installing Debian's chromium when missing
#   scripts/chromium.sh env       the same, as `export OFFPEAK_CHROMIUM=…` for eval
#   scripts/chromium.sh version   prints the browser's version (installing it when missing)
#
# playwright-core downloads no browser here: it launches this binary (`executablePath`). Debian's `/usr/bin/chromium`
# is a shell wrapper (it prints a harmless `[: … unexpected operator` from /etc/chromium.d); the real binary is
# /usr/lib/chromium/chromium, which is what this prints.
#
# Environment:
#   OFFPEAK_CHROMIUM   a browser binary to use instead (must be executable)
#
# Only the path (or the export line) goes to stdout; messages go to stderr.
set -euo pipefail

say() { echo "chromium.sh: $*" >&2; }
die() { say "$*"; exit 1; }

is_root() { [ "$(id -u)" = "0" ]; }

find_browser() {
  local candidate
  for candidate in /usr/lib/chromium/chromium /usr/lib/chromium-browser/chromium-browser; do
    if [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

install_chromium() {
  command -v apt-get >/dev/null 2>&1 || die "Chromium is not installed and there is no apt-get (set OFFPEAK_CHROMIUM to a browser binary)"
  is_root || die "Chromium is not installed and installing it needs root: apt-get install -y --no-install-recommends chromium"
  say "installing Debian's chromium package"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends chromium fonts-dejavu-core >&2; then
    apt-get update >&2
    apt-get install -y --no-install-recommends chromium fonts-dejavu-core >&2
  fi
}

ensure() {
  local browser
  if [ -n "${OFFPEAK_CHROMIUM:-}" ]; then
    [ -f "$OFFPEAK_CHROMIUM" ] && [ -x "$OFFPEAK_CHROMIUM" ] || die "OFFPEAK_CHROMIUM=$OFFPEAK_CHROMIUM is not an executable file"
    echo "$OFFPEAK_CHROMIUM"
    return 0
  fi
  if browser="$(find_browser)"; then
    echo "$browser"
    return 0
  fi
  install_chromium
  browser="$(find_browser)" || die "no chromium binary under /usr/lib/chromium after installing the chromium package"
  say "installed $("$browser" --version 2>/dev/null || echo "$browser")"
  echo "$browser"
}

case "${1:-}" in
  path) ensure ;;
  env)
    b="$(ensure)"
    echo "export OFFPEAK_CHROMIUM=$b"
    ;;
  version)
    b="$(ensure)"
    "$b" --version
    ;;
  *)
    echo "usage: scripts/chromium.sh path|env|version" >&2
    exit 2
    ;;
esac
