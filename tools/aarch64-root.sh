#!/usr/bin/env bash
# Build (or refresh) a Debian bookworm arm64 root for running edgetune under
# qemu user-mode emulation on an x86-64 host.  Idempotent: every step is
# skipped when its result is already there.  Must run as root.
#
#   tools/aarch64-root.sh [ROOT]          # ROOT defaults to /work/arm64/root
#   tools/aarch64-root.sh --venv [ROOT]   # also /opt/venv with the device + export deps
#   tools/aarch64-root.sh --umount [ROOT] # undo the bind mounts
#   chroot ROOT /usr/bin/env -u PIP_FIND_LINKS HOME=/root /bin/bash
#
# Environment:
#   MIRROR     Debian mirror (default: first uncommented Debian URI in the host's apt sources)
#   SUITE      default bookworm
#   QEMU_FROM  trixie (default) or bookworm.  bookworm's qemu 7.2 segfaults while loading
#              onnxruntime >= 1.28's native module (1.27 and older load); trixie's qemu 10.0
#              loads them.  With "trixie" the static qemu-aarch64 from trixie's qemu-user
#              package is unpacked into QEMU_DIR (no host apt config or package is changed)
#              and registered as the aarch64 binfmt interpreter in place of bookworm's.
#   QEMU_DIR   default: $(dirname ROOT)/qemu
#   VENV_PKGS  what --venv installs (default below)
#   SKIP_APT=1 host packages are already there
set -euo pipefail

UMOUNT=0 VENV=0
while [[ "${1:-}" == --* ]]; do
  case $1 in
    --umount) UMOUNT=1 ;;
    --venv)   VENV=1 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
ROOT="${1:-${ROOT:-/work/arm64/root}}"
SUITE="${SUITE:-bookworm}"
QEMU_FROM="${QEMU_FROM:-trixie}"
QEMU_DIR="${QEMU_DIR:-$(dirname "$ROOT")/qemu}"
VENV_PKGS="${VENV_PKGS:-numpy psutil click tokenizers safetensors onnxruntime torch==2.9.1 onnx==1.23.2 pytest pillow}"

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
BINFMT=/proc/sys/fs/binfmt_misc
if ! is_mounted $BINFMT; then
  log "mounting binfmt_misc"
  mount -t binfmt_misc binfmt_misc $BINFMT
fi
if [[ ! -e $BINFMT/qemu-aarch64 ]]; then
  log "enabling qemu-aarch64 binfmt"
  update-binfmts --enable qemu-aarch64 2>/dev/null \
    || { update-binfmts --import qemu-aarch64 2>/dev/null; update-binfmts --enable qemu-aarch64; }
fi

# 2b. a newer qemu (see QEMU_FROM above)
if [[ $QEMU_FROM == trixie ]]; then
  interp="$QEMU_DIR/usr/libexec/qemu-binfmt/aarch64-binfmt-P"  # -> ../../bin/qemu-aarch64
  if [[ ! -x "$QEMU_DIR/usr/bin/qemu-aarch64" ]]; then
    log "fetching trixie's qemu-user into $QEMU_DIR"
    apt_dir="$QEMU_DIR.apt"
    mkdir -p "$apt_dir/parts" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    cat > "$apt_dir/parts/trixie.sources" <<EOF
Types: deb
URIs: ${MIRROR:-http://deb.debian.org/debian}
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt_o=(-o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$apt_dir/parts"
           -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
           -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
    apt-get "${apt_o[@]}" update -q
    (cd "$apt_dir" && rm -f qemu-user_*.deb && apt-get "${apt_o[@]}" download qemu-user)
    mkdir -p "$QEMU_DIR"
    dpkg-deb -x "$apt_dir"/qemu-user_*.deb "$QEMU_DIR"
  fi
  [[ -x "$interp" ]] || { log "no $interp in trixie's qemu-user"; exit 1; }
  if ! grep -qxF "interpreter $interp" $BINFMT/qemu-aarch64 2>/dev/null; then
    log "registering $("$QEMU_DIR/usr/bin/qemu-aarch64" --version | head -n1) as the aarch64 interpreter"
    [[ -e $BINFMT/qemu-aarch64 ]] && echo -1 > $BINFMT/qemu-aarch64
    # magic and mask as in qemu's binfmt.d/qemu-aarch64.conf; F: the kernel opens the
    # interpreter now, so it need not exist inside ROOT
    printf '%s' ':qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:'"$interp"':OPF' \
      > $BINFMT/register
  fi
fi
grep -q '^enabled' $BINFMT/qemu-aarch64 || { log "qemu-aarch64 binfmt is not enabled"; exit 1; }

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

# 6. optional venv (host PIP_FIND_LINKS points at x86 wheels: drop it inside)
in_root() { chroot "$ROOT" /usr/bin/env -u PIP_FIND_LINKS HOME=/root PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"; }
if [[ $VENV == 1 ]]; then
  [[ -x "$ROOT/opt/venv/bin/python" ]] || { log "creating /opt/venv"; in_root python3 -m venv /opt/venv; }
  log "pip install $VENV_PKGS"
  # shellcheck disable=SC2086
  in_root /opt/venv/bin/pip install -q $VENV_PKGS
  in_root /opt/venv/bin/python -c "import onnxruntime, numpy; print('onnxruntime', onnxruntime.__version__, 'numpy', numpy.__version__)"
fi

log "ready: chroot $ROOT /bin/bash   ($(chroot "$ROOT" uname -m), $(head -n1 $BINFMT/qemu-aarch64 | tr -d '\n'); $(sed -n 's/^interpreter //p' $BINFMT/qemu-aarch64))"
