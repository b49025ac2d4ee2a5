# Shared by e2e/k8s/build.sh and e2e/helm/build.sh: logging, reading a pin from go.mod, timing.
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
