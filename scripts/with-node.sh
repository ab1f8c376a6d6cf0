#!/usr/bin/env bash
# Runs a command with Node.js >= 22.19 first on PATH (see ensure-node.sh).
#   scripts/with-node.sh node packages/core/src/bin.ts --help
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=ensure-node.sh
source "$here/ensure-node.sh" 2>/dev/null || source "$here/ensure-node.sh"
# as the offpeak executable runs (packages/core/src/bin.ts): two malloc arenas, not one per thread
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
exec "$@"
