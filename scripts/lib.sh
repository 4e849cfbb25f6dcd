# Shared settings for the scripts in this folder. Source it; do not run it.
# shellcheck shell=bash
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Outside the clone, so a fresh clone reuses the venv and collections.
CACHE_DIR="${RELIABLE_CELERY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reliable-celery}"
TESTHOST_IMAGE_REPO="reliable-celery-testhost"
# The Debian suites the collection supports and tests, oldest first.
TESTHOST_SUITES=(bookworm trixie)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# The controller venvs are keyed by what goes into them, so a changed pin builds a new one:
# the toolchain (default) or the oldest ansible-core the collection claims (floor).
controller_venv_dir() {
  local requirements=requirements-dev name=venv digest
  [[ "${1:-toolchain}" == floor ]] && requirements=requirements-floor name=venv-floor
  digest="$(cat "$REPO_ROOT/$requirements.txt" "$REPO_ROOT/$requirements.lock" \
    "$REPO_ROOT/scripts/controller-venv.sh" | sha256sum | cut -c1-12)"
  printf '%s/%s-%s' "$CACHE_DIR" "$name" "$digest"
}

# Everything a test or demo step needs in its environment: venv tools first in PATH,
# this checkout as the collection reliable.celery, the bundled third-party collections.
# `activate_toolchain floor` takes the oldest claimed ansible-core instead.
activate_toolchain() {
  local venv
  venv="$(controller_venv_dir "${1:-toolchain}")"
  [[ -f "$venv/.complete" ]] || die "controller venv missing: run scripts/controller-venv.sh (or make venv)"
  # Ansible's own state (tmp, galaxy cache, what ansible-lint installs) stays in this checkout,
  # where this checkout is linked as the collection reliable.celery.
  export ANSIBLE_HOME="$REPO_ROOT/.cache/ansible"
  mkdir -p "$ANSIBLE_HOME/collections/ansible_collections/reliable"
  ln -sfn ../../../../.. "$ANSIBLE_HOME/collections/ansible_collections/reliable/celery"
  export VIRTUAL_ENV="$venv"
  # Before them, a `docker` whose `docker exec` into a test host goes through one channel per host.
  export PATH="$REPO_ROOT/scripts/testhost-docker:$venv/bin:$PATH"
  export ANSIBLE_COLLECTIONS_PATH="$ANSIBLE_HOME/collections:$venv/collections"
  export ANSIBLE_ROLES_PATH="$REPO_ROOT/roles"
  export ANSIBLE_PIPELINING=True
  # Compiled Python is kept, in this checkout's cache. Where the machine sets PYTHONDONTWRITEBYTECODE,
  # every Ansible worker process (one per task and host) compiled the collection's plugins again.
  unset PYTHONDONTWRITEBYTECODE
  export PYTHONPYCACHEPREFIX="$REPO_ROOT/.cache/pycache"
  # Plain logs when nobody watches a terminal (CI, redirected output).
  if [[ ! -t 1 ]]; then export NO_COLOR=1 PY_COLORS=0 ANSIBLE_NOCOLOR=1; fi
  # TESTHOST_IMAGE_BOOKWORM, TESTHOST_IMAGE_TRIXIE...; TESTHOST_IMAGE: the scenarios' default suite.
  local suite
  for suite in "${TESTHOST_SUITES[@]}"; do
    export "TESTHOST_IMAGE_${suite^^}=$(testhost_image "$suite")"
  done
  export TESTHOST_IMAGE="$TESTHOST_IMAGE_BOOKWORM"
}

testhost_recipe_digest() {
  cat "$REPO_ROOT/scripts/testhost-image.sh" "$REPO_ROOT/scripts/testhost_zip_code_cache.py" | sha256sum | cut -c1-12
}

# The test-host image of a suite: scripts/testhost-image.sh builds it.
testhost_image() {
  printf '%s:%s-%s' "$TESTHOST_IMAGE_REPO" "$1" "$(testhost_recipe_digest)"
}

# use_testhost_suite SUITE: the environment of a scenario run on SUITE: TESTHOST_SUITE,
# TESTHOST_IMAGE, and TESTHOST_REDIS_SERVER, the Redis-protocol server the scenarios that follow the
# suite deploy: Valkey where Debian ships it (Debian 13 on), so that both servers are tested.
use_testhost_suite() {
  [[ " ${TESTHOST_SUITES[*]} " == *" $1 "* ]] || die "unknown suite '$1': one of ${TESTHOST_SUITES[*]}"
  export TESTHOST_SUITE="$1"
  TESTHOST_IMAGE="$(testhost_image "$1")"
  export TESTHOST_IMAGE
  case "$1" in
    bookworm) export TESTHOST_REDIS_SERVER=redis ;;
    *) export TESTHOST_REDIS_SERVER=valkey ;;
  esac
}
