#!/usr/bin/env bash
# Runs molecule scenarios on the local systemd test hosts, each on every supported Debian suite
# (TESTHOST_SUITES in lib.sh): every scenario by default, or the ones named, as SCENARIO (every
# suite) or SCENARIO:SUITE (e.g. scripts/molecule.sh default:trixie). Extra molecule arguments
# after `--`.
# A run gets its suite's environment (use_testhost_suite in lib.sh) and its own molecule state
# directory.
# FLOOR_SCENARIOS run with the oldest ansible-core meta/runtime.yml claims (the floor venv), the
# others with the toolchain's. SUITELESS_SCENARIOS name one host per suite themselves and run once.
# One run goes to the foreground; several run MOLECULE_JOBS at a time (default 3, longest first:
# their hosts mostly wait on apt, pip and Celery, two jobs left 40 % of two CPUs idle; the two
# suites of a scenario that names its own hosts never at once, as they share those names; one on
# the base config's platform, named by suite, runs on both at once), LANE_SCENARIOS' runs one at a
# time beside them, each logging to
# .cache/molecule-logs/SCENARIO-SUITE.log with the time of each line, whose tail is printed when
# the run fails, and its error lines once more at the end.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
activate_toolchain
cd "$REPO_ROOT"

FLOOR_SCENARIOS=(site)
SUITELESS_SCENARIOS=(testhost)
# Run only when named (`make chaos`, `make benchmark`), not by default.
NAMED_ONLY_SCENARIOS=(ha-rabbitmq ha-redis fleet)
# Run by default on one suite each (`make chaos` runs both): four runs would outgrow `make test`'s
# 60 minutes (two took 615 CPU-s, 2026-12-08; docs/testing.md).
ONE_SUITE_RUNS=(ha-redis:bookworm ha-rabbitmq:trixie)
# Runs that mostly wait on the faults they make (the CPU was 85-90 % idle in their verify beside
# each other, 2026-12-08): they go one at a time in a lane of their own beside the MOLECULE_JOBS
# others, instead of taking the place of one that keeps the CPU busy.
LANE_SCENARIOS=(ha-rabbitmq ha-redis)
requested=()
while (($#)) && [[ "$1" != "--" ]]; do requested+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
if ((${#requested[@]} == 0)); then
  # Longest first, so that the short ones fill the gaps at the end; longest by the time a
  # scenario's suites take together: django's run one after the other (about 3000 s on a busy
  # machine), default's at once (about 2400 s). Behind site, django's two ended last.
  scenarios=()
  for name in django default site chaos-rabbitmq chaos-redis restart; do [[ -f "molecule/$name/molecule.yml" ]] && scenarios+=("$name"); done
  for file in molecule/*/molecule.yml; do
    name="$(basename "$(dirname "$file")")"
    [[ " ${scenarios[*]} ${NAMED_ONLY_SCENARIOS[*]} " == *" $name "* ]] || scenarios+=("$name")
  done
  scenarios+=("${ONE_SUITE_RUNS[@]}")
  requested=("${scenarios[@]}")
fi
((${#requested[@]})) || die "no molecule scenarios found under molecule/"

# The runs, as SCENARIO:SUITE (SUITELESS_SCENARIOS as SCENARIO:all), in the order requested, each
# scenario's suites one after the other: the scheduler below starts the first pending run whose
# scenario is not running, so a long scenario's second suite starts as soon as its first ends
# instead of last.
runs=()
for entry in "${requested[@]}"; do
  scenario="${entry%%:*}"
  [[ -f "molecule/$scenario/molecule.yml" ]] || die "no molecule scenario '$scenario' (molecule/*/molecule.yml)"
  if [[ " ${SUITELESS_SCENARIOS[*]} " == *" $scenario "* ]]; then
    runs+=("$scenario:all")
  elif [[ "$entry" == *:* ]]; then
    runs+=("$entry")
  else
    for suite in "${TESTHOST_SUITES[@]}"; do runs+=("$scenario:$suite"); done
  fi
done
for entry in "${requested[@]}"; do
  [[ "$entry" != *:* || " ${TESTHOST_SUITES[*]} " == *" ${entry#*:} "* ]] \
    || die "unknown suite in '$entry': one of ${TESTHOST_SUITES[*]}"
done

# molecule_test SCENARIO:SUITE ARGS...: `molecule test` on the suite, with the ansible-core the
# scenario runs on.
molecule_test() {
  local scenario="${1%%:*}" suite="${1#*:}"
  shift
  (
    if [[ " ${FLOOR_SCENARIOS[*]} " == *" $scenario "* ]]; then activate_toolchain floor; fi
    if [[ "$suite" == all ]]; then export TESTHOST_SUITE=all; else use_testhost_suite "$suite"; fi
    export MOLECULE_EPHEMERAL_DIRECTORY="$REPO_ROOT/.cache/molecule/$scenario-$suite"
    local version
    version="$(ansible --version)"
    log "molecule test -s $scenario on $suite with ${version%%$'\n'*}"
    molecule test -s "$scenario" "$@"
  )
}

# The examples' wheels: the example app's for the scenarios that deploy examples/inventory's
# group_vars, the Django project's for examples/infra_repo's.
RELIABLE_CELERY_EXAMPLE_WHEELHOUSE="$(scripts/example-wheelhouse.sh)"
RELIABLE_CELERY_DJANGO_WHEELHOUSE="$(scripts/example-wheelhouse.sh django_project)"
export RELIABLE_CELERY_EXAMPLE_WHEELHOUSE RELIABLE_CELERY_DJANGO_WHEELHOUSE

if ((${#runs[@]} == 1)); then
  start=$SECONDS
  molecule_test "${runs[0]}" "$@"
  log "${runs[0]} passed in $((SECONDS - start)) s"
  exit 0
fi

logs="$REPO_ROOT/.cache/molecule-logs"
mkdir -p "$logs"
run_log() { printf '%s/%s.log' "$logs" "${1/:/-}"; }
run_scenario() {
  local run="$1" start=$SECONDS log
  shift
  log="$(run_log "$run")"
  # Unbuffered, so that each line gets the time it was written.
  if PYTHONUNBUFFERED=1 molecule_test "$run" "$@" 2>&1 | awk '{ print strftime("%H:%M:%S"), $0; fflush() }' >"$log"; then
    log "$run passed in $((SECONDS - start)) s"
    touch "${log%.log}.passed"
  else
    tail -n 150 "$log" >&2
    log "$run FAILED after $((SECONDS - start)) s (log: $log)"
    return 1
  fi
}

jobs_max="${MOLECULE_JOBS:-3}"
# shares_hosts SCENARIO: whether its suites share host names (its molecule.yml names its platforms).
shares_hosts() { grep -q '^platforms:' "molecule/$1/molecule.yml"; }
# in_lane SCENARIO: whether its runs go in the lane beside the jobs.
in_lane() { [[ " ${LANE_SCENARIOS[*]} " == *" $1 "* ]]; }
rm -f "$logs"/*.passed
declare -A running=() # PID -> SCENARIO:SUITE
pending=("${runs[@]}")
while ((${#pending[@]} + ${#running[@]})); do
  # Start the first pending run whose scenario is not running on another suite, while a job (or
  # the lane) is free.
  started=false
  jobs_running=0
  lane_running=0
  for other in "${running[@]}"; do
    if in_lane "${other%%:*}"; then lane_running=$((lane_running + 1)); else jobs_running=$((jobs_running + 1)); fi
  done
  if ((jobs_running < jobs_max || lane_running < 1)); then
    for i in "${!pending[@]}"; do
      run="${pending[$i]}"
      if in_lane "${run%%:*}"; then ((lane_running < 1)) || continue; else ((jobs_running < jobs_max)) || continue; fi
      busy=false
      if shares_hosts "${run%%:*}"; then
        for other in "${running[@]}"; do [[ "${other%%:*}" == "${run%%:*}" ]] && busy=true; done
      fi
      $busy && continue
      log "starting ${run%%:*} on ${run#*:} (log: $(run_log "$run"))"
      run_scenario "$run" "$@" &
      running[$!]="$run"
      unset "pending[$i]"
      pending=("${pending[@]}")
      started=true
      break
    done
  fi
  $started && continue
  wait -n || true
  for pid in "${!running[@]}"; do kill -0 "$pid" 2>/dev/null || unset "running[$pid]"; done
done
failures=0
for run in "${runs[@]}"; do
  [[ -f "$(run_log "$run" | sed 's/\.log$/.passed/')" ]] && continue
  failures=$((failures + 1))
  # Again at the very end, where a CI report that keeps only the last lines still shows it.
  log "$run failed; its errors:"
  grep -E 'fatal:|FAILED|ERROR|failed=[1-9]| [0-9]+ failed|^[0-9:]{8} E ' "$(run_log "$run")" | tail -n 25 | cut -c1-400 >&2 || true
done
((failures == 0)) || die "$failures of ${#runs[@]} molecule runs failed"
log "all ${#runs[@]} molecule runs passed"
