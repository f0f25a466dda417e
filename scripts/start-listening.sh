# Sourced by scripts that start kiln processes on loopback (scripts/demo-hybrid.sh,
# benches/route_overhead.sh). Needs WORK (a scratch folder) and the array PIDS set by the caller;
# START_TRIES (default 600, 50 ms apart) bounds the wait for the first line.
#
# start NAME [ENV=VALUE ...] CMD [ARGS...]: runs the command in the background (stdout and stderr
# in $WORK/NAME.out and .err, its pid added to PIDS and written to $WORK/NAME.pid) and prints the
# base URL announced on its "... listening on URL" line; exits with the process's stderr when it
# does not announce one. Called as `URL="$(start ...)"` it runs in a subshell, so PIDS does not
# see the pid: the caller's cleanup stops what `stop_started` finds in $WORK/*.pid.
start() {
  local name="$1"; shift
  env "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PIDS+=("$!")
  echo "$!" >"$WORK/$name.pid"
  for _ in $(seq 1 "${START_TRIES:-600}"); do
    if grep -q "listening on" "$WORK/$name.out" 2>/dev/null; then
      sed -n 's/.*listening on //p' "$WORK/$name.out" | head -1; return 0
    fi
    sleep 0.05
  done
  echo "$name did not start" >&2; cat "$WORK/$name.err" >&2; exit 1
}

# stop_started: SIGTERM to every process `start` recorded in $WORK/*.pid, then up to 10 s for
# them to exit (they drain), then SIGKILL.
stop_started() {
  local pids=() p
  for f in "$WORK"/*.pid; do [ -f "$f" ] && pids+=("$(cat "$f")"); done
  [ "${#pids[@]}" -eq 0 ] && return 0
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 200); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && return 0
    sleep 0.05
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
}
