#!/usr/bin/env bash
# Builds an offline wheelhouse that the tests and the demo deploy (celery_worker_app_wheelhouse)
# and prints its directory; rebuilt only when its example, the Celery pin or this script change.
#   example_app (default): Celery with the Redis extra and its dependencies, plus the example app
#     at versions 1.0.0 and 2.0.0.
#   django_project: Celery with the Redis extra and the Django project's requirements.txt (its
#     code is deployed as a directory, not as a wheel).
# Both hold the uv that celery_base installs (celery_worker_installer uv).
# Every wheel is pure Python, abi3 or (uv) Python-independent (psycopg without [binary] uses Debian's libpq5), so one
# wheelhouse serves Debian 12's CPython 3.11 and Debian 13's 3.13.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
activate_toolchain

EXAMPLE="${1:-example_app}"
CELERY_REQUIREMENT="celery[redis]==5.7.0"
UV_REQUIREMENT="uv==$(sed -n 's/^__celery_base_uv_version: "\(.*\)"$/\1/p' "$REPO_ROOT/roles/celery_base/vars/main.yml")"
case "$EXAMPLE" in
  example_app | django_project) ;;
  *) die "unknown example '$EXAMPLE': example_app or django_project" ;;
esac
SOURCE="$REPO_ROOT/examples/$EXAMPLE"
digest="$( (cat "${BASH_SOURCE[0]}"; echo "$UV_REQUIREMENT"; cd "$SOURCE" && find . -type f ! -path '*/build/*' ! -path '*/__pycache__/*' ! -name '*.egg-info' -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-12)"
prefix="$REPO_ROOT/.cache/${EXAMPLE//_/-}-wheelhouse"
wheelhouse="$prefix-$digest"
if [[ -f "$wheelhouse/.complete" ]]; then
  echo "$wheelhouse"
  exit 0
fi

rm -rf "$wheelhouse" "$prefix"-*
mkdir -p "$wheelhouse"
pip_quiet() { pip "$@" --quiet --disable-pip-version-check >&2 2>/dev/null || pip "$@" --disable-pip-version-check >&2; }
requirements=("$CELERY_REQUIREMENT" "async-timeout>=4.0.3" "$UV_REQUIREMENT")
[[ "$EXAMPLE" == django_project ]] && requirements+=(-r "$SOURCE/requirements.txt")
pip_quiet download --dest "$wheelhouse" --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 \
  --platform manylinux2014_x86_64 --platform any "${requirements[@]}"
# (pip download evaluates markers for 3.11.0-ish, but redis needs async-timeout on
# python_full_version < 3.11.3, which Debian 12's 3.11.2 is: it is added explicitly.)
if [[ "$EXAMPLE" == example_app ]]; then
  build="$(mktemp -d)"
  trap 'rm -rf "$build"' EXIT
  for version in 1.0.0 2.0.0; do
    cp -r "$SOURCE" "$build/$version"
    sed -i "s/^version = .*/version = \"$version\"/" "$build/$version/pyproject.toml"
    sed -i "s/^VERSION = .*/VERSION = \"$version\"/" "$build/$version/src/reliable_celery_example/release.py"
    pip_quiet wheel --no-deps --wheel-dir "$wheelhouse" "$build/$version"
  done
fi
touch "$wheelhouse/.complete"
echo "$wheelhouse"
