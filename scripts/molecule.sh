#!/usr/bin/env bash
# Runs molecule scenarios on the local systemd test hosts: every scenario by default, or the
# ones named (e.g. scripts/molecule.sh testhost). Extra molecule arguments after `--`.
# FLOOR_SCENARIOS run with the oldest ansible-core meta/runtime.yml claims (the floor venv), the
# others with the toolchain's.
# One scenario runs in the foreground; several run MOLECULE_JOBS at a time (default 2, longest
# first: their hosts mostly wait on apt, pip and Celery), each logging to
# .cache/molecule-logs/SCENARIO.log, whose tail is printed when the scenario fails.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
activate_toolchain
cd "$REPO_ROOT"

scenarios=()
while (($#)) && [[ "$1" != "--" ]]; do scenarios+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
if ((${#scenarios[@]} == 0)); then
  # Longest first, so that the short ones fill the gaps at the end.
  for name in site default chaos-redis chaos-rabbitmq rabbitmq restart; do [[ -f "molecule/$name/molecule.yml" ]] && scenarios+=("$name"); done
  for file in molecule/*/molecule.yml; do
    name="$(basename "$(dirname "$file")")"
    [[ " ${scenarios[*]} " == *" $name "* ]] || scenarios+=("$name")
  done
fi
((${#scenarios[@]})) || die "no molecule scenarios found under molecule/"
FLOOR_SCENARIOS=(site)

# molecule_test SCENARIO ARGS...: `molecule test` with the ansible-core the scenario runs on.
molecule_test() {
  local scenario="$1"
  shift
  if [[ " ${FLOOR_SCENARIOS[*]} " == *" $scenario "* ]]; then
    (activate_toolchain floor && log "scenario $scenario on $(ansible --version | head -1)" && molecule test -s "$scenario" "$@")
  else
    molecule test -s "$scenario" "$@"
  fi
}

# The example app's wheels, for the scenarios that deploy examples/inventory's group_vars.
RELIABLE_CELERY_EXAMPLE_WHEELHOUSE="$(scripts/example-wheelhouse.sh)"
export RELIABLE_CELERY_EXAMPLE_WHEELHOUSE

if ((${#scenarios[@]} == 1)); then
  start=$SECONDS
  molecule_test "${scenarios[0]}" "$@"
  log "scenario ${scenarios[0]} passed in $((SECONDS - start)) s"
  exit 0
fi

logs="$REPO_ROOT/.cache/molecule-logs"
mkdir -p "$logs"
run_scenario() {
  local scenario="$1" start=$SECONDS
  shift
  if molecule_test "$scenario" "$@" >"$logs/$scenario.log" 2>&1; then
    log "scenario $scenario passed in $((SECONDS - start)) s"
    touch "$logs/$scenario.passed"
  else
    tail -n 150 "$logs/$scenario.log" >&2
    log "scenario $scenario FAILED after $((SECONDS - start)) s (log: $logs/$scenario.log)"
    return 1
  fi
}

jobs_max="${MOLECULE_JOBS:-2}"
rm -f "$logs"/*.passed
for scenario in "${scenarios[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs_max)); do wait -n || true; done
  log "molecule test -s $scenario (log: $logs/$scenario.log)"
  run_scenario "$scenario" "$@" &
done
wait || true
failures=0
for scenario in "${scenarios[@]}"; do [[ -f "$logs/$scenario.passed" ]] || failures=$((failures + 1)); done
((failures == 0)) || die "$failures of ${#scenarios[@]} molecule scenarios failed"
log "all ${#scenarios[@]} molecule scenarios passed"
