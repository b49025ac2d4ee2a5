#!/usr/bin/env bash
# The images the real node runs, built here with buildah (no Docker engine, no registry):
#
#   registry.k8s.io/pause:3.10           the pod sandbox: e2e/k8s/node/pause.c, static
#   gcr.io/distroless/cc-debian12:nonroot   stand-in for the Dockerfile's runtime base: the host's
#                                        (Debian 12) glibc, libgcc, libstdc++ and libgomp, its CA
#                                        bundle, /etc/passwd with nonroot 65532; ~6 MB
#   rust:1.95.0-bookworm                 stand-in for the Dockerfile's builder base: a Debian 12
#                                        root (mmdebstrap: gcc, libc6-dev, make, pkg-config,
#                                        ca-certificates, git) plus the host's Rust 1.95.0
#   ghost:e2e                            the project's Dockerfile, unchanged, built on those two
#
# The base images cannot be pulled from here, so they are made locally and tagged with the
# names the Dockerfile uses; a user's build pulls the real ones. Each stand-in is rebuilt only
# when its recipe (this file, pause.c, the toolchain) changes; ghost:e2e is rebuilt on every
# `build` (cargo's cache mounts make that incremental).
#
# Usage: e2e/k8s/image.sh {bases | build | archive NAME | print-tag}
#   bases          make the three stand-ins that are missing or out of date
#   build          bases, then build ghost:e2e from the Dockerfile and write the OCI archives
#   archive NAME   print the path of NAME's OCI archive (pause or ghost), written by build
#   print-tag      print the ghost image's tag
#
# Everything (buildah's storage, its cache mounts, the archives) lives in
# $GHOST_CACHE_DIR/image.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE_DIR="${GHOST_CACHE_DIR:-${HOME:-/root}/.cache/ghost}"
IMAGE_DIR="$CACHE_DIR/image"
DEBIAN_MIRROR="${GHOST_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
RUST_VERSION=1.95.0
GHOST_TAG=localhost/ghost:e2e
PAUSE_TAG=registry.k8s.io/pause:3.10
RUNTIME_TAG=gcr.io/distroless/cc-debian12:nonroot
BUILDER_TAG=docker.io/library/rust:$RUST_VERSION-bookworm

log() { printf 'image: %s\n' "$*"; }
die() {
  printf 'image: ERROR: %s\n' "$*" >&2
  exit 1
}
# shellcheck source=../lib/processes.sh
source "$HERE/../lib/processes.sh" # now_ms, elapsed

# buildah keeps its storage, and the RUN --mount=type=cache directories (under TMPDIR), here.
bah() {
  TMPDIR="$IMAGE_DIR/tmp" buildah --root "$IMAGE_DIR/storage" --runroot "$IMAGE_DIR/run" \
    --storage-driver overlay "$@"
}

# stamped NAME RECIPE: true when NAME's image exists and was made from RECIPE.
stamped() {
  [[ -f "$IMAGE_DIR/$1.stamp" && "$(cat "$IMAGE_DIR/$1.stamp")" == "$2" ]] &&
    bah inspect --type image "$3" >/dev/null 2>&1
}

recipe_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# ----------------------------------------------------------------------------- pause

build_pause() {
  local recipe
  recipe="$(recipe_of "$HERE/node/pause.c" "${BASH_SOURCE[0]}")"
  stamped pause "$recipe" "$PAUSE_TAG" && return 0
  local t0 work c
  t0=$(now_ms)
  work="$(mktemp -d "$IMAGE_DIR/tmp/pause.XXXXXX")"
  gcc -Os -static -o "$work/pause" "$HERE/node/pause.c"
  c="$(bah from scratch)"
  bah copy "$c" "$work/pause" /pause >/dev/null
  bah config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  bah commit -q "$c" "$PAUSE_TAG" >/dev/null
  bah rm "$c" >/dev/null
  rm -rf "$work"
  echo "$recipe" >"$IMAGE_DIR/pause.stamp"
  log "pause: built in $(elapsed "$t0")"
}

# ----------------------------------------------------------------------------- runtime base

# The files of the host's packages that distroless "cc" carries (libraries only).
runtime_files() {
  dpkg -L libc6 libgcc-s1 libstdc++6 libgomp1 |
    grep -E '^/(usr/)?lib(64|/x86_64-linux-gnu)/' |
    while read -r f; do [[ -f "$f" || -L "$f" ]] && echo "$f"; done
}

build_runtime() {
  local recipe
  recipe="$( (dpkg-query -W libc6 libgcc-s1 libstdc++6 libgomp1 ca-certificates; sha256sum "${BASH_SOURCE[0]}") | sha256sum | cut -d' ' -f1)"
  stamped runtime "$recipe" "$RUNTIME_TAG" && return 0
  local t0 root c
  t0=$(now_ms)
  root="$(mktemp -d "$IMAGE_DIR/tmp/runtime.XXXXXX")"
  # Paths as the packages name them (bookworm's /lib is /usr/lib; keep both spellings working).
  mkdir -p "$root/usr/lib" "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot" "$root/root"
  ln -s usr/lib "$root/lib"
  ln -s usr/lib64 "$root/lib64"
  mkdir -p "$root/usr/lib64"
  runtime_files | while read -r f; do
    dest="$root/usr${f#/usr}"
    mkdir -p "$(dirname "$dest")"
    cp -a "$f" "$dest"
  done
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  cp /etc/os-release "$root/etc/os-release"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
EOF
  chmod 1777 "$root/tmp"
  chown 65532:65532 "$root/home/nonroot"
  chmod 700 "$root/root"
  c="$(bah from scratch)"
  bah add "$c" "$root" / >/dev/null
  bah config --user 65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$c"
  bah commit -q "$c" "$RUNTIME_TAG" >/dev/null
  bah rm "$c" >/dev/null
  local size
  size="$(du -sh "$root" | cut -f1)"
  rm -rf "$root"
  echo "$recipe" >"$IMAGE_DIR/runtime.stamp"
  log "runtime base: built in $(elapsed "$t0") ($size)"
}

# ----------------------------------------------------------------------------- builder base

build_builder() {
  # The machine's active toolchain (the one that builds the project), when it is the version
  # the Dockerfile names: nothing is downloaded, and no toolchain needs installing by hand.
  local toolchain recipe
  [[ "$(rustc --version)" == "rustc $RUST_VERSION "* ]] ||
    die "the Dockerfile builds with Rust $RUST_VERSION, the active toolchain is $(rustc --version): make $RUST_VERSION the default (rustup default $RUST_VERSION)"
  toolchain="$(rustc --print sysroot)"
  recipe="$( (rustc -vV; sha256sum "${BASH_SOURCE[0]}" /etc/ssl/certs/ca-certificates.crt) | sha256sum | cut -d' ' -f1)"
  stamped builder "$recipe" "$BUILDER_TAG" && return 0
  local t0 root_tar c
  t0=$(now_ms)
  root_tar="$IMAGE_DIR/bookworm-builder.tar"
  if [[ ! -s "$root_tar" ]]; then
    log "builder base: making a Debian 12 root with mmdebstrap"
    command -v mmdebstrap >/dev/null || die "mmdebstrap not found (apt-get install mmdebstrap)"
    mmdebstrap --quiet --variant=apt --include=gcc,libc6-dev,make,pkg-config,ca-certificates,git \
      bookworm "$root_tar.tmp" "$DEBIAN_MIRROR" || die "mmdebstrap failed"
    mv "$root_tar.tmp" "$root_tar"
  fi
  c="$(bah from scratch)"
  bah add "$c" "$root_tar" / >/dev/null
  # The host's toolchain, where the official image keeps rustup's (no rustup inside: one
  # toolchain, linked onto PATH as the image's proxies would be).
  bah copy "$c" "$toolchain" "/usr/local/rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu" >/dev/null
  bah run --network none "$c" -- sh -c "rm -rf /usr/local/rustup/toolchains/*/share/doc && mkdir -p /usr/local/cargo/bin && for b in cargo rustc rustdoc; do ln -sf /usr/local/rustup/toolchains/$RUST_VERSION-x86_64-unknown-linux-gnu/bin/\$b /usr/local/cargo/bin/\$b; done"
  # The host's CA bundle: the registries are reached through this machine's TLS setup.
  bah copy "$c" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
  bah config --env CARGO_HOME=/usr/local/cargo --env RUSTUP_HOME=/usr/local/rustup \
    --env RUST_VERSION="$RUST_VERSION" \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  bah commit -q "$c" "$BUILDER_TAG" >/dev/null
  bah rm "$c" >/dev/null
  echo "$recipe" >"$IMAGE_DIR/builder.stamp"
  log "builder base: built in $(elapsed "$t0")"
}

# ----------------------------------------------------------------------------- ghost

build_ghost() {
  local t0
  t0=$(now_ms)
  log "ghost: building $GHOST_TAG from $REPO/Dockerfile"
  (cd "$REPO" && nice -n "${GHOST_IMAGE_BUILD_NICE:-10}" buildah --root "$IMAGE_DIR/storage" \
    --runroot "$IMAGE_DIR/run" --storage-driver overlay bud --pull-never --network host \
    --layers -q -f Dockerfile -t "$GHOST_TAG" . >"$IMAGE_DIR/ghost-build.log" 2>&1) || {
    tail -n 40 "$IMAGE_DIR/ghost-build.log" >&2
    die "ghost: buildah bud failed (log: $IMAGE_DIR/ghost-build.log)"
  }
  log "ghost: built in $(elapsed "$t0")"
}

archive() {
  local tag=$2 out="$IMAGE_DIR/$1.oci.tar"
  rm -f "$out"
  bah push -q "$tag" "oci-archive:$out:$tag" >/dev/null
}

bases() {
  command -v buildah >/dev/null || die "buildah not found (apt-get install buildah)"
  mkdir -p "$IMAGE_DIR/tmp"
  build_pause
  build_runtime
  build_builder
}

case "${1:-}" in
bases) bases ;;
build)
  t_all=$(now_ms)
  bases
  TMPDIR="$IMAGE_DIR/tmp" build_ghost
  archive pause "$PAUSE_TAG"
  archive ghost "$GHOST_TAG"
  log "done in $(elapsed "$t_all")"
  ;;
archive)
  [[ ${2:-} == pause || ${2:-} == ghost ]] || die "usage: $0 archive {pause|ghost}"
  echo "$IMAGE_DIR/$2.oci.tar"
  ;;
print-tag) echo "$GHOST_TAG" ;;
*) die "usage: $0 {bases | build | archive NAME | print-tag}" ;;
esac
