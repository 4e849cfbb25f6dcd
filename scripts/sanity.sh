#!/usr/bin/env bash
# `ansible-test sanity` needs the collection at ansible_collections/NAMESPACE/NAME. It runs
# here on a copy of the files git knows (tracked and untracked, not ignored), in venvs it
# builds itself (--venv): no ansible-test container images are pulled.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
activate_toolchain

tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
dest="$tree/ansible_collections/reliable/celery"
mkdir -p "$dest"
cd "$REPO_ROOT"
# playbooks/collections is the link that lets the playbooks run from a checkout: not content.
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' file; do [[ -e "$file" && "$file" != playbooks/collections/* ]] && printf '%s\0' "$file"; done \
  | xargs -0 cp --parents -t "$dest"

# ansible-test bootstraps pip into its venvs with a get-pip script it downloads from a host
# that only its own CI reaches; when that fails it says where a copy may be saved. Save there a
# stand-in that runs the same pip version from its PyPI wheel, and run again. ansible-test's
# venvs and caches stay in our cache dir (it puts them under ~/.ansible/test).
export HOME="$CACHE_DIR/ansible-test-home"

write_get_pip_stand_in() {
  local path="$1" version wheel
  version="$(basename "$path" .py)"
  version="${version#get_pip_}"
  version="${version//_/.}"
  mkdir -p "$(dirname "$path")"
  pip download --quiet --no-deps --dest "$(dirname "$path")" "pip==$version" 2>/dev/null
  wheel=("$(dirname "$path")"/pip-"$version"-*.whl)
  cat >"$path.tmp" <<PY
# Stand-in for get-pip.py: runs pip $version from its PyPI wheel, as get-pip does.
# get-pip's own flags --no-setuptools/--no-wheel only skip packages never installed here.
import sys
sys.path.insert(0, "${wheel[0]}")
from pip._internal.cli.main import main
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall", *args]))
PY
  mv "$path.tmp" "$path"
  rm -f "$path.download"
  log "Saved a get-pip stand-in for pip $version: $path"
}

# sanity ARGS...: ansible-test sanity, once more after saving the get-pip stand-in it asked for.
sanity() {
  local output status=0 wanted
  output="$(mktemp)"
  ansible-test sanity "$@" 2>&1 | tee "$output" || status=$?
  wanted="$(sed -n 's/^The bootstrap script can be manually downloaded and saved to: //p' "$output" | head -1)"
  rm -f "$output"
  ((status == 0)) && return 0
  [[ -n "$wanted" && ! -e "$wanted" ]] || return "$status"
  write_get_pip_stand_in "$wanted"
  ansible-test sanity "$@"
}

controller_python="$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
cd "$dest"
log "ansible-test sanity on Python $controller_python ($(find plugins -name '*.py' | wc -l) plugin files)"
sanity --venv --requirements --python "$controller_python" --color=no plugins/ tests/ meta/

# The oldest ansible-core meta/runtime.yml claims, with its own ansible-test, on the Python it
# runs on there: Debian 12's 3.11, also the test hosts' (modules and module_utils run there).
activate_toolchain floor
floor_python="$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
log "ansible-test sanity with $(ansible --version | sed -n 1p) on Python $floor_python (requires_ansible's floor)"
sanity --venv --requirements --python "$floor_python" --color=no plugins/ tests/ meta/
