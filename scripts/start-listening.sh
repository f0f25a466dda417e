# Sourced by scripts that start kiln processes on loopback (scripts/demo-hybrid.sh,
# benches/route_overhead.sh). Needs WORK (a scratch folder) and the array PIDS set by the caller;
# START_TRIES (default 600, 50 ms apart) bounds the wait for the first line.
#
# start NAME [ENV=VALUE ...] CMD [ARGS...]: runs the command in the background (stdout and stderr
# in $WORK/NAME.out and .err, its pid added to PIDS) and prints the base URL announced on its
# "... listening on URL" line; exits with the process's stderr when it does not announce one.
start() {
  local name="$1"; shift
  env "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PIDS+=("$!")
  for _ in $(seq 1 "${START_TRIES:-600}"); do
    if grep -q "listening on" "$WORK/$name.out" 2>/dev/null; then
      sed -n 's/.*listening on //p' "$WORK/$name.out" | head -1; return 0
    fi
    sleep 0.05
  done
  echo "$name did not start" >&2; cat "$WORK/$name.err" >&2; exit 1
}
