# Processes the e2e scripts start and stop by pid (cluster.sh, node.sh), and their timing.
# Sourced; the caller sets PIDS and LOGS (directories), START_TIMEOUT and STOP_TIMEOUT
# (seconds), and defines log, die and `binary_of <name>` (the binary a component runs).

now_ms() { echo $(($(date +%s%N) / 1000000)); }
elapsed() { # elapsed <start_ms> -> "1.8s"
  local ms=$(($(now_ms) - $1))
  printf '%d.%ds' $((ms / 1000)) $(((ms % 1000) / 100))
}

# pid_of <name> -> pid on stdout if the pid file names a live process running that name's
# binary; nothing (and status 1) otherwise. The binary check keeps a recycled pid from being
# taken for ours.
pid_of() {
  local f="$PIDS/$1.pid" pid exe
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  exe="${exe% (deleted)}" # the binary was rebuilt while it ran
  [[ "$(basename "$exe")" == "$(basename "$(binary_of "$1")")" ]] || return 1
  echo "$pid"
}

# launch <name> <args...>: start its binary detached (own session, stdin closed, output to
# LOGS/<name>.log); the child writes its own pid file.
launch() {
  local name="$1"
  shift
  rm -f "$PIDS/$name.pid"
  # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDS/$name.pid" "$(binary_of "$name")" "$@" \
    </dev/null >>"$LOGS/$name.log" 2>&1 &
  local _
  for _ in $(seq 1 50); do
    pid_of "$name" >/dev/null && return 0
    sleep 0.1
  done
  tail -n 30 "$LOGS/$name.log" >&2 || true
  die "$name did not start (log: $LOGS/$name.log)"
}

# wait_for <name> <what> <command...>: poll the command until it succeeds; fail early if the
# process died.
wait_for() {
  local name="$1" what="$2" deadline=$(($(date +%s) + START_TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! pid_of "$name" >/dev/null; then
      tail -n 40 "$LOGS/$name.log" >&2 || true
      die "$name exited while waiting for $what (log: $LOGS/$name.log)"
    fi
    (($(date +%s) < deadline)) || die "timed out after ${START_TIMEOUT}s waiting for $what (log: $LOGS/$name.log)"
    sleep 0.5
  done
}

# stop_one <name> [group]: SIGTERM, SIGKILL after STOP_TIMEOUT. With `group`, to its whole
# process group (a relay's forked children, one per open connection).
stop_one() {
  local name="$1" target pid t0 deadline
  if ! pid="$(pid_of "$name")"; then
    rm -f "$PIDS/$name.pid"
    log "$name: not running"
    return 0
  fi
  target="$pid"
  [[ ${2:-} == group ]] && target="-$pid"
  t0=$(now_ms)
  kill -TERM -- "$target" 2>/dev/null || true
  deadline=$(($(date +%s) + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if (($(date +%s) >= deadline)); then
      log "$name: still running after ${STOP_TIMEOUT}s, sending SIGKILL to $pid"
      kill -KILL -- "$target" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.1
  done
  rm -f "$PIDS/$name.pid"
  log "$name: stopped pid $pid in $(elapsed "$t0")"
}
