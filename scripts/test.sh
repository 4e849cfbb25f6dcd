#!/usr/bin/env bash
# The whole suite, behind `make test`: each step in order, stopping at the first failure,
# then a table of step times and a closing count.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

STEPS=(setup yamllint ansible-lint ruff changelog-lint sanity unit argument-specs build molecule)
passed=0
failed=0
report=()
for step in "${STEPS[@]}"; do
  log "step $step"
  start=$SECONDS
  if make --no-print-directory "$step"; then
    passed=$((passed + 1))
    report+=("$(printf '%-16s ok    %4d s' "$step" $((SECONDS - start)))")
  else
    failed=$((failed + 1))
    report+=("$(printf '%-16s FAIL  %4d s' "$step" $((SECONDS - start)))")
    break
  fi
done
printf '\n%s\n' "${report[@]}"
printf 'make test: %d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
