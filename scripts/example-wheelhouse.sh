#!/usr/bin/env bash
# Builds the offline wheelhouse the tests deploy with celery_worker_app_wheelhouse: wheels of
# Celery (with the Redis extra) and its dependencies for the test hosts' Python (Debian 12:
# CPython 3.11), plus the example app at versions 1.0.0 and 2.0.0. Prints the directory.
# Rebuilt only when the example app, the Celery pin or this script change.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
activate_toolchain

CELERY_REQUIREMENT="${1:-celery[redis]==5.7.0}"
APP_SOURCE="$REPO_ROOT/examples/example_app"
digest="$( (cat "${BASH_SOURCE[0]}"; echo "$CELERY_REQUIREMENT"; cd "$APP_SOURCE" && find . -type f ! -path '*/build/*' ! -name '*.egg-info' -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-12)"
wheelhouse="$REPO_ROOT/.cache/example-wheelhouse-$digest"
if [[ -f "$wheelhouse/.complete" ]]; then
  echo "$wheelhouse"
  exit 0
fi

rm -rf "$wheelhouse" "$REPO_ROOT"/.cache/example-wheelhouse-*
mkdir -p "$wheelhouse"
pip_quiet() { pip "$@" --quiet --disable-pip-version-check >&2 2>/dev/null || pip "$@" --disable-pip-version-check >&2; }
pip_quiet download --dest "$wheelhouse" --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 --platform manylinux2014_x86_64 --platform any \
  "$CELERY_REQUIREMENT" "async-timeout>=4.0.3"
# (pip download evaluates markers for 3.11.0-ish, but redis needs async-timeout on
# python_full_version < 3.11.3, which Debian 12's 3.11.2 is: it is added explicitly.)
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
for version in 1.0.0 2.0.0; do
  cp -r "$APP_SOURCE" "$build/$version"
  sed -i "s/^version = .*/version = \"$version\"/" "$build/$version/pyproject.toml"
  sed -i "s/^VERSION = .*/VERSION = \"$version\"/" "$build/$version/src/reliable_celery_example/release.py"
  pip_quiet wheel --no-deps --wheel-dir "$wheelhouse" "$build/$version"
done
touch "$wheelhouse/.complete"
echo "$wheelhouse"
