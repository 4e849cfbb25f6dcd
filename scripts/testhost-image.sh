#!/usr/bin/env bash
# Builds the Debian systemd images the molecule scenarios and the demo boot, one per suite
# (TESTHOST_SUITES in lib.sh: bookworm and trixie), from this one recipe:
#   scripts/testhost-image.sh [SUITE]     every suite when none is named
# Each tag is the suite and a digest of this file and testhost_zip_code_cache.py: an image is
# rebuilt only when it is missing or when this recipe changed. Needs root (debootstrap) and a running dockerd (host-deps.sh).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=systemd,systemd-sysv,dbus,python3,python3-apt,python3-venv,python3-packaging,ca-certificates,iproute2,procps,sudo
# Units that only slow a container's boot or fail in one.
MASKED_UNITS=(
  getty.target console-getty.service getty@tty1.service
  systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket
  systemd-udev-trigger.service systemd-remount-fs.service systemd-firstboot.service
  apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer
  systemd-tmpfiles-clean.timer dpkg-db-backup.timer
  sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount
)

if (($# == 0)); then
  for suite in "${TESTHOST_SUITES[@]}"; do "$0" "$suite"; done
  # Drop the images of older recipes.
  current="$(for suite in "${TESTHOST_SUITES[@]}"; do testhost_image "$suite"; echo; done)"
  docker image ls --format '{{.Repository}}:{{.Tag}}' "$TESTHOST_IMAGE_REPO" \
    | grep -vxF "$current" | xargs -r docker rmi >/dev/null 2>&1 || true
  exit 0
fi
SUITE="$1"
[[ " ${TESTHOST_SUITES[*]} " == *" $SUITE "* ]] || die "unknown suite '$SUITE': one of ${TESTHOST_SUITES[*]}"
IMAGE="$(testhost_image "$SUITE")"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "Test-host image $IMAGE is up to date"
  exit 0
fi

rootfs="$(mktemp -d /var/tmp/reliable-celery-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

log "Bootstrapping $SUITE into $rootfs (about a minute)"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
  || { tail -30 "$rootfs.log" >&2; die "debootstrap failed (full log: $rootfs.log)"; }
rm -f "$rootfs.log"

cat >"$rootfs/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
SOURCES

# A TLS-inspecting proxy's CA, where this machine has one, so pip and apt inside the
# test host trust what this machine trusts. Nothing is copied on a normal machine.
shopt -s nullglob
local_cas=(/usr/local/share/ca-certificates/*.crt)
if ((${#local_cas[@]})); then
  cp "${local_cas[@]}" "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null
fi

: >"$rootfs/etc/machine-id"
for unit in "${MASKED_UNITS[@]}"; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
# systemd makes / a shared mount at boot on a real host, but skips it in a container. Credential
# set-up (LoadCredential=) mounts a ramfs in a helper's own mount namespace and relies on /run
# propagating it back to PID 1: with docker's private /run the service gets an empty directory.
# Within the container's own mount namespace; the host's mounts are untouched.
cat >"$rootfs/etc/systemd/system/testhost-rshared-root.service" <<'UNIT'
[Unit]
Description=Make / a shared mount, as systemd does on a real host (LoadCredential= needs it)
DefaultDependencies=no
ConditionVirtualization=container
Before=local-fs-pre.target sysinit.target systemd-sysusers.service systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/mount --make-rshared /
UNIT
mkdir -p "$rootfs/etc/systemd/system/sysinit.target.wants"
ln -sf ../testhost-rshared-root.service "$rootfs/etc/systemd/system/sysinit.target.wants/testhost-rshared-root.service"
# Ansible's modules reach Python as zips, whose sources Python compiles on every run
# (testhost_zip_code_cache.py).
cp "$REPO_ROOT/scripts/testhost_zip_code_cache.py" "$rootfs/usr/lib/python3/dist-packages/"
echo "import testhost_zip_code_cache" >"$rootfs/usr/lib/python3/dist-packages/testhost-zip-code-cache.pth"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
# An empty list dir dated now looks fresh to apt's cache_valid_time ("No package matching").
touch -d @0 "$rootfs/var/lib/apt/lists"

log "Importing $IMAGE"
tar -C "$rootfs" -c . | docker import -c 'ENV container=docker' -c 'CMD ["/sbin/init"]' - "$IMAGE-rootfs" >/dev/null
# docker import cannot set STOPSIGNAL; systemd shuts down cleanly on SIGRTMIN+3.
printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$IMAGE-rootfs" \
  | docker build --quiet --label "org.reliable-celery.recipe=$(testhost_recipe_digest)" \
    --label "org.reliable-celery.suite=$SUITE" -t "$IMAGE" - \
    >"$rootfs.build.log" 2>&1 || { cat "$rootfs.build.log" >&2; die "docker build of $IMAGE failed"; }
rm -f "$rootfs.build.log"
docker rmi "$IMAGE-rootfs" >/dev/null
log "Built $IMAGE"
