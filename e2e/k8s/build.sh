#!/usr/bin/env bash
# Build the pinned Kubernetes control plane for ghost's tier-5 tests from Go
# modules (no downloads other than the Go module proxy).
#
# Usage: e2e/k8s/build.sh [--print-dir | --print-version]
#
#   (no args)        build kube-apiserver, kube-controller-manager, kubectl, etcd
#                    and the node's kubelet, kube-proxy and kube-scheduler into
#                    the bin dir, skipping those already there
#   --print-dir      print the bin dir and exit (builds nothing)
#   --print-version  print the pinned Kubernetes version and exit
#
# The versions come from e2e/k8s/go.mod (k8s.io/kubernetes, and etcd's
# go.etcd.io/etcd/server/v3). Binaries are cached by Kubernetes version in
#   ${GHOST_CACHE_DIR:-$HOME/.cache/ghost}/k8s/<k8s-version>/bin
# A stamp of go.sum sits beside them: if go.sum changes (say, a new etcd)
# while the Kubernetes version does not, the cached binaries are rebuilt.
#
# Environment (defaults in brackets):
#   GHOST_CACHE_DIR        cache root [$HOME/.cache/ghost]
#   GHOST_K8S_BUILD_JOBS   go build -p [1]: keeps a core free for other builds
#   GHOST_K8S_BUILD_NICE   nice level of the go builds [19]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${GHOST_CACHE_DIR:-${HOME:-/root}/.cache/ghost}"
JOBS="${GHOST_K8S_BUILD_JOBS:-1}"
NICE="${GHOST_K8S_BUILD_NICE:-19}"

LOG_PREFIX=k8s-build
# shellcheck source=../lib/go-build.sh
source "$HERE/../lib/go-build.sh"

K8S_VERSION="$(mod_version k8s.io/kubernetes)"
ETCD_VERSION="$(mod_version go.etcd.io/etcd/server/v3)"
[[ -n "$K8S_VERSION" ]] || die "k8s.io/kubernetes not pinned in $HERE/go.mod"
[[ -n "$ETCD_VERSION" ]] || die "go.etcd.io/etcd/server/v3 not pinned in $HERE/go.mod"
BIN_DIR="$CACHE_DIR/k8s/$K8S_VERSION/bin"

case "${1:-}" in
  --print-dir)
    echo "$BIN_DIR"
    exit 0
    ;;
  --print-version)
    echo "$K8S_VERSION"
    exit 0
    ;;
  "") ;;
  *) die "usage: $0 [--print-dir | --print-version]" ;;
esac

mkdir -p "$BIN_DIR"
STAMP="$BIN_DIR/.go.sum.sha256"
want_stamp="$(sha256sum "$HERE/go.sum" | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" != "$want_stamp" ]]; then
  log "go.sum changed since the cached build: rebuilding everything in $BIN_DIR"
  rm -f "$BIN_DIR/kube-apiserver" "$BIN_DIR/kube-controller-manager" "$BIN_DIR/kubectl" "$BIN_DIR/etcd" \
    "$BIN_DIR/kubelet" "$BIN_DIR/kube-proxy" "$BIN_DIR/kube-scheduler"
fi
echo "$want_stamp" >"$STAMP"

# Version stamps, so /version and `kubectl version` report the real release
# instead of v0.0.0-master.
K8S_MINOR="${K8S_VERSION#v1.}"
K8S_MINOR="${K8S_MINOR%%.*}"
VPKG=k8s.io/component-base/version
K8S_LDFLAGS="-X $VPKG.gitVersion=$K8S_VERSION -X $VPKG.gitMajor=1 -X $VPKG.gitMinor=$K8S_MINOR"
K8S_LDFLAGS+=" -X $VPKG.gitTreeState=clean -X $VPKG.buildDate=1970-01-01T00:00:00Z"
K8S_LDFLAGS+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
K8S_LDFLAGS+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$K8S_MINOR"

# build <name> <package> <extra ldflags>
build() {
  local name="$1" pkg="$2" extra="$3" out="$BIN_DIR/$1"
  if [[ -x "$out" ]]; then
    log "$name: cached ($out)"
    return 0
  fi
  command -v go >/dev/null || die "go not found on PATH (needed to build $name)"
  log "$name: building $pkg (nice $NICE, -p $JOBS)"
  local t0 tmp
  t0=$(now_ms)
  tmp="$out.tmp.$$"
  (
    cd "$HERE"
    GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=readonly -p=$JOBS" CGO_ENABLED=0 \
      nice -n "$NICE" go build -trimpath -ldflags="-s -w $extra" -o "$tmp" "$pkg"
  ) || {
    rm -f "$tmp"
    die "$name: go build failed"
  }
  mv -f "$tmp" "$out"
  log "$name: built in $(elapsed "$t0") ($(du -h "$out" | cut -f1))"
}

log "Kubernetes $K8S_VERSION, etcd $ETCD_VERSION -> $BIN_DIR"
t_all=$(now_ms)
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$K8S_LDFLAGS"
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$K8S_LDFLAGS"
build kubectl k8s.io/kubernetes/cmd/kubectl "$K8S_LDFLAGS"
build etcd go.etcd.io/etcd/server/v3 "-X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION"
# The real node (node.sh).
build kubelet k8s.io/kubernetes/cmd/kubelet "$K8S_LDFLAGS"
build kube-proxy k8s.io/kubernetes/cmd/kube-proxy "$K8S_LDFLAGS"
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$K8S_LDFLAGS"
log "done in $(elapsed "$t_all")"
