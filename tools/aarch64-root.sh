#!/usr/bin/env bash
# Build (or refresh) a Debian bookworm arm64 root for running edgetune under
# qemu user-mode emulation on an x86-64 host.  Idempotent: every step is
# skipped when its result is already there.  Must run as root.
#
#   tools/aarch64-root.sh [ROOT]          # ROOT defaults to /work/arm64/root
#   chroot ROOT /bin/bash                 # then work inside
#   tools/aarch64-root.sh --umount [ROOT] # undo the bind mounts
#
# Environment: MIRROR (default: first Debian URI in the host's apt sources),
#              SUITE (default bookworm), SKIP_APT=1 (host packages present).
set -euo pipefail

UMOUNT=0
if [[ "${1:-}" == "--umount" ]]; then UMOUNT=1; shift; fi
ROOT="${1:-${ROOT:-/work/arm64/root}}"
SUITE="${SUITE:-bookworm}"

log() { printf '[aarch64-root] %s\n' "$*" >&2; }

is_mounted() { mountpoint -q "$1" 2>/dev/null; }

if [[ $UMOUNT == 1 ]]; then
  for m in dev/pts dev sys proc; do
    if is_mounted "$ROOT/$m"; then umount -l "$ROOT/$m" && log "unmounted $ROOT/$m"; fi
  done
  exit 0
fi

[[ $(id -u) == 0 ]] || { log "must run as root"; exit 1; }

# 1. host packages
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v update-binfmts      >/dev/null || need+=(binfmt-support)
command -v debootstrap         >/dev/null || need+=(debootstrap)
if (( ${#need[@]} )) && [[ "${SKIP_APT:-0}" != 1 ]]; then
  log "installing ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

# 2. binfmt_misc registration for aarch64
if ! is_mounted /proc/sys/fs/binfmt_misc; then
  log "mounting binfmt_misc"
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  log "enabling qemu-aarch64 binfmt"
  update-binfmts --enable qemu-aarch64 || true
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  # update-binfmts needs binfmt-support's service to have imported the format
  update-binfmts --import qemu-aarch64 2>/dev/null || true
  update-binfmts --enable qemu-aarch64
fi
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || { log "qemu-aarch64 binfmt is not enabled"; exit 1; }

# 3. debootstrap
if [[ -z "${MIRROR:-}" ]]; then
  MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
                /etc/apt/sources.list.d/*.list 2>/dev/null \
           | grep -vE '^[[:space:]]*#' \
           | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -n1 || true)
  MIRROR="${MIRROR:-http://deb.debian.org/debian}"
fi
if [[ ! -x "$ROOT/usr/bin/python3" ]]; then
  log "debootstrap $SUITE arm64 into $ROOT from $MIRROR"
  mkdir -p "$ROOT"
  debootstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    "$SUITE" "$ROOT" "$MIRROR"
else
  log "debootstrap skipped: $ROOT/usr/bin/python3 exists"
fi

# 4. host configuration: DNS, pip config, CA bundle
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
[[ -f /etc/pip.conf ]] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
if [[ -d /etc/xdg/pip ]]; then
  mkdir -p "$ROOT/etc/xdg"
  rm -rf "$ROOT/etc/xdg/pip"
  cp -r /etc/xdg/pip "$ROOT/etc/xdg/pip"
fi
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
  mkdir -p "$ROOT/etc/ssl/certs"
  cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
fi

# 5. bind mounts
for m in proc sys dev dev/pts; do
  mkdir -p "$ROOT/$m"
  if ! is_mounted "$ROOT/$m"; then
    case $m in
      proc) mount -t proc proc "$ROOT/proc" ;;
      *)    mount --bind "/$m" "$ROOT/$m" ;;
    esac
    log "mounted $ROOT/$m"
  fi
done

log "ready: chroot $ROOT /bin/bash   ($(chroot "$ROOT" uname -m))"
