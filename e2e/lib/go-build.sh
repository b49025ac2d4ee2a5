# Shared by e2e/k8s/build.sh, e2e/helm/build.sh, e2e/prometheus/build.sh and e2e/krew/build.sh:
# logging, reading a pin from go.mod, timing.
# Source it after setting HERE (the build's directory, holding go.mod) and LOG_PREFIX.

log() { printf '%s: %s\n' "$LOG_PREFIX" "$*" >&2; }
die() {
  printf '%s: ERROR: %s\n' "$LOG_PREFIX" "$*" >&2
  exit 1
}

# mod_version <module path> -> version required in $HERE/go.mod (block or single line)
mod_version() {
  awk -v m="$1" '
    $1 == "require" && $2 == m && $3 ~ /^v/ { print $3; exit }
    $1 == m && $2 ~ /^v/ { print $2; exit }' "$HERE/go.mod"
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
elapsed() { # elapsed <start_ms> -> "81.3s"
  local ms=$(($(now_ms) - $1))
  printf '%d.%ds' $((ms / 1000)) $(((ms % 1000) / 100))
}

# The tools built from one go.mod each (helm, promtool, krew): a binary is stamped with the hash
# of the go.sum it was built from, and rebuilt when go.sum changes while the version pin does not.
go_sum_hash() { sha256sum "$HERE/go.sum" | cut -d' ' -f1; }
stamp_of() { echo "$(dirname "$1")/.go.sum.sha256"; }

# up_to_date <binary>: it exists and was built from this go.sum.
up_to_date() {
  [[ -x "$1" && -f "$(stamp_of "$1")" && "$(cat "$(stamp_of "$1")")" == "$(go_sum_hash)" ]]
}

# build_tool <package> <binary> <ldflags>: go build (cached modules only, nice $NICE, -p $JOBS)
# into <binary>, then stamp it.
build_tool() {
  local pkg=$1 bin=$2 ldflags=$3 t0 tmp="$2.tmp.$$"
  command -v go >/dev/null || die "go not found on PATH"
  mkdir -p "$(dirname "$bin")"
  rm -f "$bin"
  log "building $pkg (nice $NICE, -p $JOBS) -> $bin"
  t0=$(now_ms)
  (
    cd "$HERE"
    GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=readonly -p=$JOBS" CGO_ENABLED=0 \
      nice -n "$NICE" go build -trimpath -ldflags="$ldflags" -o "$tmp" "$pkg"
  ) || {
    rm -f "$tmp"
    die "go build failed"
  }
  mv -f "$tmp" "$bin"
  go_sum_hash >"$(stamp_of "$bin")"
  log "built $(basename "$bin") in $(elapsed "$t0") ($(du -h "$bin" | cut -f1))"
}
