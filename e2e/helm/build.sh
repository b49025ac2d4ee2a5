#!/usr/bin/env bash
# Build the pinned Helm CLI (helm.sh/helm/v3/cmd/helm) from its Go module, for
# scripts/check-packaging (helm lint, helm template). No downloads other than
# the Go module proxy.
#
# Usage: e2e/helm/build.sh [--print-dir | --print-version | --print-bin]
#
#   (no args)        build helm into the bin dir unless it is there already,
#                    then print the path of the binary on stdout
#   --print-dir      print the bin dir and exit (builds nothing)
#   --print-bin      print the path of the helm binary and exit (builds nothing)
#   --print-version  print the pinned Helm version and exit
#
# The version comes from e2e/helm/go.mod (helm.sh/helm/v3). The binary is
# cached by Helm version in
#   ${GHOST_CACHE_DIR:-$HOME/.cache/ghost}/helm/<helm-version>/bin/helm
# A stamp of go.sum sits beside it: if go.sum changes while the Helm version
# does not, the cached binary is rebuilt.
#
# Environment (defaults in brackets):
#   GHOST_CACHE_DIR         cache root [$HOME/.cache/ghost]
#   GHOST_HELM_BUILD_JOBS   go build -p [1]: keeps a core free for other builds
#   GHOST_HELM_BUILD_NICE   nice level of the go build [19]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${GHOST_CACHE_DIR:-${HOME:-/root}/.cache/ghost}"
JOBS="${GHOST_HELM_BUILD_JOBS:-1}"
NICE="${GHOST_HELM_BUILD_NICE:-19}"

LOG_PREFIX=helm-build
# shellcheck source=../lib/go-build.sh
source "$HERE/../lib/go-build.sh"

HELM_VERSION="$(mod_version helm.sh/helm/v3)"
CLIENT_GO_VERSION="$(mod_version k8s.io/client-go)"
[[ -n "$HELM_VERSION" ]] || die "helm.sh/helm/v3 not pinned in $HERE/go.mod"
BIN_DIR="$CACHE_DIR/helm/$HELM_VERSION/bin"
HELM="$BIN_DIR/helm"

case "${1:-}" in
  --print-dir)
    echo "$BIN_DIR"
    exit 0
    ;;
  --print-bin)
    echo "$HELM"
    exit 0
    ;;
  --print-version)
    echo "$HELM_VERSION"
    exit 0
    ;;
  "") ;;
  *) die "usage: $0 [--print-dir | --print-bin | --print-version]" ;;
esac

mkdir -p "$BIN_DIR"
STAMP="$BIN_DIR/.go.sum.sha256"
want_stamp="$(sha256sum "$HERE/go.sum" | cut -d' ' -f1)"
if [[ -x "$HELM" && -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" ]]; then
  log "helm $HELM_VERSION: cached ($HELM)"
  echo "$HELM"
  exit 0
fi
if [[ -f "$STAMP" && "$(cat "$STAMP")" != "$want_stamp" ]]; then
  log "go.sum changed since the cached build: rebuilding $HELM"
fi
rm -f "$HELM"

command -v go >/dev/null || die "go not found on PATH"

# What Helm's Makefile stamps in: the version, and the Kubernetes version that
# lint and template assume (client-go v0.N.x <-> Kubernetes v1.N).
LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.metadata="
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
if [[ "$CLIENT_GO_VERSION" =~ ^v0\.([0-9]+)\. ]]; then
  minor="${BASH_REMATCH[1]}"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    LDFLAGS+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
fi

log "helm $HELM_VERSION: building helm.sh/helm/v3/cmd/helm (nice $NICE, -p $JOBS) -> $BIN_DIR"
t0=$(now_ms)
tmp="$HELM.tmp.$$"
(
  cd "$HERE"
  GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=readonly -p=$JOBS" CGO_ENABLED=0 \
    nice -n "$NICE" go build -trimpath -ldflags="$LDFLAGS" -o "$tmp" helm.sh/helm/v3/cmd/helm
) || {
  rm -f "$tmp"
  die "go build failed"
}
mv -f "$tmp" "$HELM"
echo "$want_stamp" >"$STAMP"
log "helm $HELM_VERSION: built in $(elapsed "$t0") ($(du -h "$HELM" | cut -f1))"
"$HELM" version --short >&2 || die "the built helm does not run"
echo "$HELM"
