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

if up_to_date "$HELM"; then
  log "helm $HELM_VERSION: cached ($HELM)"
  echo "$HELM"
  exit 0
fi

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

build_tool helm.sh/helm/v3/cmd/helm "$HELM" "$LDFLAGS"
"$HELM" version --short >&2 || die "the built helm does not run"
echo "$HELM"
