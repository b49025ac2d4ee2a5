#!/usr/bin/env bash
# Build the pinned krew (sigs.k8s.io/krew/cmd/krew, the kubectl plugin manager) from its Go
# module, for scripts/check-packaging (krew install --manifest --archive of the plugin archive
# that scripts/krew-manifest packs). No downloads other than the Go module proxy.
#
# Usage: e2e/krew/build.sh [--print-bin]
#
#   (no args)    build krew into the bin dir unless it is there already, then print the path
#                of the binary on stdout
#   --print-bin  print the path of the krew binary and exit (builds nothing)
#
# The version comes from e2e/krew/go.mod (sigs.k8s.io/krew). The binary is cached by that
# version in
#   ${GHOST_CACHE_DIR:-$HOME/.cache/ghost}/krew/<version>/bin/krew
# A stamp of go.sum sits beside it: if go.sum changes while the version does not, the cached
# binary is rebuilt.
#
# Environment (defaults in brackets):
#   GHOST_CACHE_DIR           cache root [$HOME/.cache/ghost]
#   GHOST_KREW_BUILD_JOBS     go build -p [1]: keeps a core free for other builds
#   GHOST_KREW_BUILD_NICE     nice level of the go build [19]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${GHOST_CACHE_DIR:-${HOME:-/root}/.cache/ghost}"
JOBS="${GHOST_KREW_BUILD_JOBS:-1}"
NICE="${GHOST_KREW_BUILD_NICE:-19}"

LOG_PREFIX=krew-build
# shellcheck source=../lib/go-build.sh
source "$HERE/../lib/go-build.sh"

VERSION="$(mod_version sigs.k8s.io/krew)"
[[ -n "$VERSION" ]] || die "sigs.k8s.io/krew not pinned in $HERE/go.mod"
BIN_DIR="$CACHE_DIR/krew/$VERSION/bin"
KREW="$BIN_DIR/krew"

case "${1:-}" in
  --print-bin)
    echo "$KREW"
    exit 0
    ;;
  "") ;;
  *) die "usage: $0 [--print-bin]" ;;
esac

if up_to_date "$KREW"; then
  log "krew $VERSION: cached ($KREW)"
  echo "$KREW"
  exit 0
fi

# What krew's hack/make-binaries.sh stamps in; `krew version` prints it as GitTag. The module
# zip has no git history, so the commit is left "unknown".
LDFLAGS="-s -w -X sigs.k8s.io/krew/internal/version.gitTag=$VERSION"

build_tool sigs.k8s.io/krew/cmd/krew "$KREW" "$LDFLAGS"
# `krew version` creates its root dir and warns when the root's bin dir is not on PATH: a
# throwaway root, on PATH, and no upgrade check (a request to GitHub).
tmp_root="$(mktemp -d)"
KREW_ROOT="$tmp_root" KREW_NO_UPGRADE_CHECK=1 PATH="$tmp_root/bin:$PATH" "$KREW" version >&2 || {
  rm -rf "$tmp_root"
  die "the built krew does not run"
}
rm -rf "$tmp_root"
echo "$KREW"
