#!/usr/bin/env bash
# The whole suite, behind `make test`: each step given (the Makefile's TEST_STEPS) in order,
# stopping at the first failure, then a table of step times and a closing count.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

STEPS=("$@")
((${#STEPS[@]})) || die "usage: scripts/test.sh STEP... (make test passes the Makefile's TEST_STEPS)"
passed=0
failed=0
report=()
for step in "${STEPS[@]}"; do
  log "step $step"
  start=$SECONDS
  # The venv and the test-host image build independently: let them overlap.
  jobs=1
  [[ "$step" == setup ]] && jobs=2
  if make --no-print-directory -j"$jobs" "$step"; then
    passed=$((passed + 1))
    report+=("$(printf '%-16s ok    %4d s' "$step" $((SECONDS - start)))")
  else
    failed=$((failed + 1))
    report+=("$(printf '%-16s FAIL  %4d s' "$step" $((SECONDS - start)))")
    break
  fi
done
printf '\nstep             result  time\n'
printf '%s\n' "${report[@]}"
printf 'make test: %d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
