#!/usr/bin/env bash
# Writes docs/benchmarks.md from the six benchmarks, on each supported Debian suite: the restart
# under load on one host (benchmarks/restart_gap.py on the restart scenario's host), and per broker
# on the chaos scenarios' hosts the stack (benchmarks/stack.py), crash recovery and poison tasks
# (benchmarks/crash.py) and hung workers with systemd's watchdog, with a 30-minute soak
# (benchmarks/watchdog.py), a release's build with pip and with uv in a container of the test-host
# image (benchmarks/installers.py), deploys of ten worker hosts (benchmarks/fleet.py, molecule/fleet),
# a RabbitMQ cluster losing a node and Redis with Sentinel losing its primary (benchmarks/ha.py,
# molecule/ha-rabbitmq and ha-redis).
# A report, not an assertion: figures on a busy machine vary, so this is not part of `make test`.
# Arguments name the parts to run again, as PART (every suite) or PART:SUITE (restart, stack, crash,
# watchdog, install, fleet, ha, ha-redis; e.g. stack:trixie); the others come from their last report in .cache/benchmarks.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
activate_toolchain
cd "$REPO_ROOT"

RELIABLE_CELERY_EXAMPLE_WHEELHOUSE="$(scripts/example-wheelhouse.sh)"
export RELIABLE_CELERY_EXAMPLE_WHEELHOUSE
reports="$REPO_ROOT/.cache/benchmarks"
mkdir -p "$reports"

all_parts=(restart stack crash watchdog install fleet ha ha-redis)
parts=("$@")
((${#parts[@]})) || parts=("${all_parts[@]}")
for suite in "${TESTHOST_SUITES[@]}"; do
  for part in "${all_parts[@]}"; do
    report="$reports/$part-$suite.md"
    [[ " ${parts[*]} " == *" $part "* || " ${parts[*]} " == *" $part:$suite "* || ! -f "$report" ]] || continue
    (
      use_testhost_suite "$suite"
      if [[ "$part" == restart ]]; then
        log "restart benchmark on $suite (molecule scenario restart)"
        export MOLECULE_EPHEMERAL_DIRECTORY="$REPO_ROOT/.cache/molecule/restart-$suite"
        status=0
        molecule create -s restart && molecule prepare -s restart && molecule converge -s restart \
          && python benchmarks/restart_gap.py --output "$report" || status=$?
        molecule destroy -s restart >/dev/null
        ((status == 0)) || die "the restart benchmark on $suite failed"
      else
        script=("benchmarks/$part.py")
        [[ "$part" == install ]] && script=(benchmarks/installers.py)
        [[ "$part" == ha-redis ]] && script=(benchmarks/ha.py --scenario ha-redis)
        log "$part benchmark on $suite (${script[*]})"
        python "${script[@]}" --output "$report" || die "the $part benchmark on $suite failed"
      fi
    )
  done
done

{
  echo "# Benchmarks"
  echo
  echo "Written by \`make benchmark\`. Figures, not assertions: they vary with the machine and its load."
  echo "The pass/fail proofs are the molecule scenarios (docs/testing.md)."
  for suite in "${TESTHOST_SUITES[@]}"; do
    for part in "${all_parts[@]}"; do
      [[ -f "$reports/$part-$suite.md" ]] && { echo; cat "$reports/$part-$suite.md"; }
    done
  done
} >docs/benchmarks.md
log "wrote docs/benchmarks.md"
