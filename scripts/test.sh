#!/usr/bin/env bash
# The whole suite, behind `make test`: each step given (the Makefile's TEST_STEPS) in order,
# stopping at the first failure, then a table of step times and a closing count.
# `molecule`, by far the longest step, runs in the background from where it stands in the list
# (the Makefile puts it right after `setup`), the steps after it beside it: they take about 150 s
# of one core, which the molecule runs would otherwise wait for. It runs to its end whatever they
# do: only then are its hosts removed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

STEPS=("$@")
((${#STEPS[@]})) || die "usage: scripts/test.sh STEP... (make test passes the Makefile's TEST_STEPS)"
passed=0
failed=0
report=()
# record STEP STATUS START: a line of the table.
record() {
  local result=ok
  if (($2 == 0)); then passed=$((passed + 1)); else failed=$((failed + 1)) result=FAIL; fi
  report+=("$(printf '%-16s %-5s %4d s' "$1" "$result" $((SECONDS - $3)))")
}
run_step() {
  local jobs=1
  # The venv and the test-host image build independently: let them overlap.
  [[ "$1" == setup ]] && jobs=2
  make --no-print-directory -j"$jobs" "$1"
}

background_pid=""
for step in "${STEPS[@]}"; do
  if [[ "$step" == molecule ]]; then
    log "step molecule (in the background)"
    molecule_start=$SECONDS
    run_step molecule &
    background_pid=$!
    continue
  fi
  log "step $step"
  start=$SECONDS
  status=0
  run_step "$step" || status=$?
  record "$step" "$status" "$start"
  ((status == 0)) || break
done
if [[ -n "$background_pid" ]]; then
  status=0
  wait "$background_pid" || status=$?
  record molecule "$status" "$molecule_start"
fi
printf '\nstep             result  time\n'
printf '%s\n' "${report[@]}"
printf 'make test: %d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
