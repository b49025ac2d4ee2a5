#!/usr/bin/env bash
# Build the pinned promtool (github.com/prometheus/prometheus/cmd/promtool) from its Go module,
# for scripts/check-packaging (promtool check rules, promtool test rules). No downloads other
# than the Go module proxy.
#
# Usage: e2e/prometheus/build.sh [--print-bin]
#
#   (no args)    build promtool into the bin dir unless it is there already, then print the
#                path of the binary on stdout
#   --print-bin  print the path of the promtool binary and exit (builds nothing)
#
# The version comes from e2e/prometheus/go.mod (github.com/prometheus/prometheus). The binary is
# cached by that version in
#   ${GHOST_CACHE_DIR:-$HOME/.cache/ghost}/prometheus/<version>/bin/promtool
# A stamp of go.sum sits beside it: if go.sum changes while the version does not, the cached
# binary is rebuilt.
#
# Environment (defaults in brackets):
#   GHOST_CACHE_DIR              cache root [$HOME/.cache/ghost]
#   GHOST_PROMTOOL_BUILD_JOBS    go build -p [1]: keeps a core free for other builds
#   GHOST_PROMTOOL_BUILD_NICE    nice level of the go build [19]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${GHOST_CACHE_DIR:-${HOME:-/root}/.cache/ghost}"
JOBS="${GHOST_PROMTOOL_BUILD_JOBS:-1}"
NICE="${GHOST_PROMTOOL_BUILD_NICE:-19}"

LOG_PREFIX=promtool-build
# shellcheck source=../lib/go-build.sh
source "$HERE/../lib/go-build.sh"

VERSION="$(mod_version github.com/prometheus/prometheus)"
[[ -n "$VERSION" ]] || die "github.com/prometheus/prometheus not pinned in $HERE/go.mod"
BIN_DIR="$CACHE_DIR/prometheus/$VERSION/bin"
PROMTOOL="$BIN_DIR/promtool"

case "${1:-}" in
  --print-bin)
    echo "$PROMTOOL"
    exit 0
    ;;
  "") ;;
  *) die "usage: $0 [--print-bin]" ;;
esac

if up_to_date "$PROMTOOL"; then
  log "promtool $VERSION: cached ($PROMTOOL)"
  echo "$PROMTOOL"
  exit 0
fi

# Module v0.3XX.Y is Prometheus 3.XX.Y; promtool prints it with --version.
LDFLAGS="-s -w"
if [[ "$VERSION" =~ ^v0\.([0-9])([0-9]+)\.([0-9]+)$ ]]; then
  LDFLAGS+=" -X github.com/prometheus/common/version.Version=${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.${BASH_REMATCH[3]}"
fi

build_tool github.com/prometheus/prometheus/cmd/promtool "$PROMTOOL" "$LDFLAGS"
"$PROMTOOL" --version >&2 || die "the built promtool does not run"
echo "$PROMTOOL"
