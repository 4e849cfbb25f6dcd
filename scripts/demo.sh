#!/usr/bin/env bash
# `make demo`: local systemd test hosts (a broker with Flower, two workers, beat), the whole
# stack deployed on them with playbooks/site.yml and examples/inventory, then real tasks,
# beat's periodic task and Flower shown working. `make demo-down` (scripts/demo.sh down)
# removes the hosts. Running it again converges the same hosts (changed=0).
#   scripts/demo.sh [up [SUITE]] | down     SUITE: trixie (default, Debian's stable) or bookworm;
# another suite than the running demo's replaces its hosts.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
activate_toolchain
cd "$REPO_ROOT"

hosts_playbooks=molecule/resources/playbooks
# The create/destroy playbooks run on this machine with the venv's Python (it has the docker SDK).
on_this_machine=(-i localhost, -e "ansible_python_interpreter=$(command -v python)" -e @examples/demo-hosts.yml)
if [[ "${1:-up}" == "down" ]]; then
  ansible-playbook "${on_this_machine[@]}" "$hosts_playbooks/destroy.yml"
  log "demo hosts removed"
  exit 0
fi

suite="${2:-trixie}"
[[ " ${TESTHOST_SUITES[*]} " == *" $suite "* ]] || die "unknown suite '$suite': one of ${TESTHOST_SUITES[*]}"
DEMO_IMAGE="$(testhost_image "$suite")"
export DEMO_IMAGE
RELIABLE_CELERY_EXAMPLE_WHEELHOUSE="$(scripts/example-wheelhouse.sh)"
export RELIABLE_CELERY_EXAMPLE_WHEELHOUSE
log "starting the demo hosts (Debian $suite)"
ansible-playbook "${on_this_machine[@]}" "$hosts_playbooks/create.yml"
log "deploying the stack: ansible-playbook -i examples/inventory playbooks/site.yml"
start=$SECONDS
ansible-playbook -i examples/inventory playbooks/site.yml
log "site.yml converged in $((SECONDS - start)) s"
ansible-playbook -i examples/inventory examples/demo-round-trip.yml
cat <<TEXT

The demo fleet runs: rc-demo-broker (Redis + Flower), rc-demo-worker1, rc-demo-worker2, rc-demo-beat.
  look around:   docker exec -it rc-demo-worker1 journalctl -u 'celery-worker*' -f
  roll a restart: (source scripts/lib.sh && activate_toolchain && ansible-playbook -i examples/inventory playbooks/restart.yml)
  tear it down:  make demo-down
TEXT
