#!/usr/bin/env bash
# Installs what the test hosts need on this machine (Debian 12, root) and makes sure
# a Docker engine answers. Idempotent: installs only what is missing, starts dockerd
# only when none answers.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APT_PACKAGES=(docker.io debootstrap)

install_missing_packages() {
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $EUID -eq 0 ]] || die "need root to install ${missing[*]} (apt-get)"
  log "Installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

start_dockerd() {
  docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null || die "dockerd not found after installing docker.io"
  log "Starting dockerd (log: /var/log/reliable-celery-dockerd.log)"
  setsid nohup dockerd >>/var/log/reliable-celery-dockerd.log 2>&1 < /dev/null &
  local deadline=$((SECONDS + 60))
  until docker info >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "dockerd did not answer within 60 s; see /var/log/reliable-celery-dockerd.log"
    sleep 0.2
  done
}

install_missing_packages
start_dockerd
