#!/usr/bin/env bash
# Writes docs/benchmarks.md from the two benchmarks: the restart under load on one host
# (benchmarks/restart_gap.py on the restart scenario's host) and the stack per broker
# (benchmarks/stack.py on the chaos scenarios' hosts). A report, not an assertion: figures on a
# busy machine vary, so this is not part of `make test`. Arguments name the parts to run again
# (restart, stack); the others come from their last report in .cache/benchmarks.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
activate_toolchain
cd "$REPO_ROOT"

RELIABLE_CELERY_EXAMPLE_WHEELHOUSE="$(scripts/example-wheelhouse.sh)"
export RELIABLE_CELERY_EXAMPLE_WHEELHOUSE
reports="$REPO_ROOT/.cache/benchmarks"
mkdir -p "$reports"

parts=("$@")
((${#parts[@]})) || parts=(restart stack)
for part in restart stack; do
  [[ " ${parts[*]} " == *" $part "* ]] || [[ ! -f "$reports/$part.md" ]] || continue
  if [[ "$part" == restart ]]; then
    log "restart benchmark (molecule scenario restart)"
    status=0
    molecule create -s restart && molecule prepare -s restart && molecule converge -s restart \
      && python benchmarks/restart_gap.py --output "$reports/restart.md" || status=$?
    molecule destroy -s restart >/dev/null
    ((status == 0)) || die "the restart benchmark failed"
  else
    log "stack benchmark (molecule scenarios chaos-redis and chaos-rabbitmq)"
    python benchmarks/stack.py --output "$reports/stack.md" || die "the stack benchmark failed"
  fi
done

{
  echo "# Benchmarks"
  echo
  echo "Written by \`make benchmark\`. Figures, not assertions: they vary with the machine and its load."
  echo "The pass/fail proofs are the molecule scenarios (docs/testing.md)."
  echo
  cat "$reports/restart.md"
  echo
  cat "$reports/stack.md"
} >docs/benchmarks.md
log "wrote docs/benchmarks.md"
