#!/usr/bin/env bash
# Runs molecule scenarios on the local systemd test hosts: every scenario by default, or
# the ones named (e.g. scripts/molecule.sh testhost). Extra molecule arguments after `--`.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
activate_toolchain
cd "$REPO_ROOT"

scenarios=()
while (($#)) && [[ "$1" != "--" ]]; do scenarios+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
if ((${#scenarios[@]} == 0)); then
  for file in molecule/*/molecule.yml; do scenarios+=("$(basename "$(dirname "$file")")"); done
fi
((${#scenarios[@]})) || die "no molecule scenarios found under molecule/"

for scenario in "${scenarios[@]}"; do
  log "molecule test -s $scenario"
  start=$SECONDS
  molecule test -s "$scenario" "$@"
  log "scenario $scenario passed in $((SECONDS - start)) s"
done
