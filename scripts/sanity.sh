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
# that only its own CI reaches. Stand in for it with the same pip taken from PyPI, and keep
# ansible-test's venvs and caches in our cache dir (it puts them under ~/.ansible/test).
export HOME="$CACHE_DIR/ansible-test-home"
# provide_get_pip: the stand-in for the pip version the active ansible-test wants.
provide_get_pip() {
  local pip_version bootstrap_cache get_pip wheel
  pip_version="$(python - <<'PY'
from types import SimpleNamespace
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(SimpleNamespace(version="3.12"))["pip"])
PY
)"
  bootstrap_cache="$HOME/.ansible/test/cache"
  get_pip="$bootstrap_cache/get_pip_${pip_version//./_}.py"
  [[ -f "$get_pip" ]] && return 0
  mkdir -p "$bootstrap_cache"
  pip download --quiet --no-deps --dest "$bootstrap_cache" "pip==$pip_version" 2>/dev/null
  wheel=("$bootstrap_cache"/pip-"$pip_version"-*.whl)
  cat >"$get_pip.tmp" <<PY
# Stand-in for get-pip.py: runs pip $pip_version from its PyPI wheel, as get-pip does.
# get-pip's own flags --no-setuptools/--no-wheel only skip packages never installed here.
import sys
sys.path.insert(0, "${wheel[0]}")
from pip._internal.cli.main import main
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall", *args]))
PY
  mv "$get_pip.tmp" "$get_pip"
}
provide_get_pip

controller_python="$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
cd "$dest"
log "ansible-test sanity on Python $controller_python ($(find plugins -name '*.py' | wc -l) plugin files)"
ansible-test sanity --venv --requirements --python "$controller_python" --color=no plugins/ tests/ meta/

# The oldest ansible-core meta/runtime.yml claims, with its own ansible-test, on the Python it
# runs on there: Debian 12's 3.11, also the test hosts' (modules and module_utils run there).
activate_toolchain floor
provide_get_pip
floor_python="$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
log "ansible-test sanity with $(ansible --version | head -1) on Python $floor_python (requires_ansible's floor)"
ansible-test sanity --venv --requirements --python "$floor_python" --color=no plugins/ tests/ meta/
