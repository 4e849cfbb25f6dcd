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
for unwanted in molecule scripts benchmarks tests/unit .ci requirements-dev.txt; do
  [[ ! -e "$installed/$unwanted" ]] || die "dev-only '$unwanted' leaked into the built collection (build_ignore)"
done
ANSIBLE_COLLECTIONS_PATH="$work/installed" ansible-galaxy collection list reliable.celery -p "$work/installed" \
  | grep -q '^reliable.celery' || die "ansible-galaxy does not list the installed reliable.celery"
# Every role's documentation renders from the installed artifact, with every option.
for role_dir in "$installed"/roles/*/; do
  role="reliable.celery.$(basename "$role_dir")"
  doc="$(ANSIBLE_COLLECTIONS_PATH="$work/installed" ansible-doc -t role "$role" 2>/dev/null)" \
    || die "ansible-doc -t role $role failed"
  options="$(python -c 'import sys, yaml; print(*yaml.safe_load(open(sys.argv[1]))["argument_specs"]["main"]["options"])' \
    "$role_dir/meta/argument_specs.yml")"
  for option in $options; do
    grep -q -- "$option" <<<"$doc" || die "ansible-doc -t role $role does not show option $option"
  done
  log "ansible-doc -t role $role shows its $(wc -w <<<"$options") options"
done
for module_file in "$installed"/plugins/modules/*.py; do
  module="reliable.celery.$(basename "$module_file" .py)"
  ANSIBLE_COLLECTIONS_PATH="$work/installed" ansible-doc "$module" >/dev/null 2>&1 || die "ansible-doc $module failed"
  log "ansible-doc $module renders"
done
log "Built and installed $(basename "${tarball[0]}") ($(du -h "${tarball[0]}" | cut -f1))"
