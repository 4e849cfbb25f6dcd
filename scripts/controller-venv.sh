#!/usr/bin/env bash
# Builds the controller venvs and the third-party collections molecule needs, without Galaxy
# (they are unpacked from the `ansible` wheel on PyPI): the toolchain (Python >= 3.12, pinned
# tools) and the floor (the oldest ansible-core the collection claims, requirements-floor.txt).
# Prints nothing and exits fast when the venvs for the current pins are complete.
# `controller-venv.sh --relock` resolves requirements-dev.txt afresh in a scratch venv and
# rewrites requirements-dev.lock from it (after changing a pin).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The collections community.docker's connection and modules need, and community.postgresql for
# examples/infra_repo's database, taken from this release.
ANSIBLE_BUNDLE_VERSION=14.5.0
BUNDLED_COLLECTIONS=(community/docker community/library_inventory_filtering_v1 ansible/posix community/postgresql)

find_python() {
  local candidate
  local candidates=("${RELIABLE_CELERY_PYTHON:-}" python3.12 python3.13 python3.14 python3)
  candidates+=("$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3 /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9])
  for candidate in "${candidates[@]}"; do
    [[ -n "$candidate" ]] || continue
    if "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      command -v "$candidate" || printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

python="$(find_python)" || die "no Python >= 3.12 with venv found (ansible-core 2.21 needs it on the controller).
Tried python3.12, python3.13, python3.14, python3 and ~/.pyenv/versions/3.12+.
Install one (e.g. 'pyenv install 3.12') or point RELIABLE_CELERY_PYTHON at its interpreter."

pip() {
  "$venv/bin/pip" "$@" >>"$pip_log" 2>&1 || { tail -30 "$pip_log" >&2; die "pip $1 failed (log: $pip_log)"; }
}

if [[ "${1:-}" == "--relock" ]]; then
  venv="$(mktemp -d)"
  trap 'rm -rf "$venv"' EXIT
  pip_log="$venv/pip.log"
  "$python" -m venv "$venv"
  pip install -r "$REPO_ROOT/requirements-dev.txt"
  {
    echo "# Full transitive pins for requirements-dev.txt: scripts/controller-venv.sh --relock writes it."
    "$venv/bin/pip" freeze --all --exclude pip --exclude setuptools 2>/dev/null
  } >"$REPO_ROOT/requirements-dev.lock"
  log "Rewrote requirements-dev.lock ($(grep -vc '^#' "$REPO_ROOT/requirements-dev.lock") pins)"
  exit 0
fi

# build_venv KIND PYTHON PIP-ARGS...: the venv with the bundled collections, unless complete.
build_venv() {
  local kind="$1" python="$2"
  shift 2
  venv="$(controller_venv_dir "$kind")"
  [[ -f "$venv/.complete" ]] && return 0
  log "Building the $kind venv $venv with $("$python" --version)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  pip_log="$venv/pip.log"
  pip install "$@"

  local wheel_dir patterns=() collection
  wheel_dir="$(mktemp -d)"
  log "Unpacking ${BUNDLED_COLLECTIONS[*]} from ansible==$ANSIBLE_BUNDLE_VERSION"
  # The wheel holds only data; its Requires-Python (>= 3.12) does not matter for unpacking.
  pip download --no-deps --only-binary=:all: --python-version 3.12 --dest "$wheel_dir" "ansible==$ANSIBLE_BUNDLE_VERSION"
  for collection in "${BUNDLED_COLLECTIONS[@]}"; do patterns+=("ansible_collections/$collection/*"); done
  "$venv/bin/python" - "$wheel_dir"/ansible-*.whl "$venv/collections" "${patterns[@]}" <<'PY'
import fnmatch, sys, zipfile
wheel, dest, *patterns = sys.argv[1:]
with zipfile.ZipFile(wheel) as zf:
    zf.extractall(dest, [n for n in zf.namelist() if any(fnmatch.fnmatch(n, p) for p in patterns)])
PY
  rm -rf "$wheel_dir"
  touch "$venv/.complete"
}

build_venv toolchain "$python" -r "$REPO_ROOT/requirements-dev.txt" -c "$REPO_ROOT/requirements-dev.lock"
# The oldest claimed ansible-core runs on the hosts' Python (Debian 12's 3.11) as well.
floor_python="$(command -v python3.11 || command -v /usr/bin/python3)"
build_venv floor "$floor_python" -r "$REPO_ROOT/requirements-floor.txt" -c "$REPO_ROOT/requirements-floor.lock"
