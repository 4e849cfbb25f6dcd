#!/usr/bin/env bash
# Builds the collection tarball and installs it into a temporary collections path: what a
# user gets from `ansible-galaxy collection install` must build, install and list.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
activate_toolchain

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ansible-galaxy collection build --output-path "$work" "$REPO_ROOT"
tarball=("$work"/reliable-celery-*.tar.gz)
# Only the empty target on the path: this checkout, linked as reliable.celery, must not count
# as "already installed".
ANSIBLE_COLLECTIONS_PATH="$work/installed" \
  ansible-galaxy collection install --offline -p "$work/installed" "${tarball[0]}"
installed="$work/installed/ansible_collections/reliable/celery"
[[ -f "$installed/MANIFEST.json" ]] || die "installed collection has no MANIFEST.json"
for unwanted in molecule scripts .ci requirements-dev.txt; do
  [[ ! -e "$installed/$unwanted" ]] || die "dev-only '$unwanted' leaked into the built collection (build_ignore)"
done
ANSIBLE_COLLECTIONS_PATH="$work/installed" ansible-galaxy collection list reliable.celery -p "$work/installed" \
  | grep -q '^reliable.celery' || die "ansible-galaxy does not list the installed reliable.celery"
log "Built and installed $(basename "${tarball[0]}") ($(du -h "${tarball[0]}" | cut -f1))"
