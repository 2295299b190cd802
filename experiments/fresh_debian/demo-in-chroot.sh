#!/usr/bin/env bash
# Times the README's first command (`bash scripts/demo.sh`) on a bare Debian 12: a
# `debootstrap --variant=minbase bookworm` root file system (88 packages, no compiler, no
# Python) holding a clean clone of this repository, entered with chroot. Run as root on a
# Debian-family host with network access to the Debian mirror and PyPI:
#   bash experiments/fresh_debian/demo-in-chroot.sh [DIR]      (default /var/tmp/audistill-fresh)
# Extra CA certificates of the host (/usr/local/share/ca-certificates, e.g. a proxy's) are
# copied in, so that pip trusts the same network the host does. The log is DIR/demo.log.
set -euo pipefail
dir=${1:-/var/tmp/audistill-fresh}
repo=$(cd "$(dirname "$0")/../.." && pwd)
root=$dir/root
[ "$(id -u)" -eq 0 ] || { echo "run as root (debootstrap, chroot, mount)"; exit 1; }
[ ! -e "$root" ] || { echo "$root exists: remove it first"; exit 1; }
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap
mkdir -p "$dir"
debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$dir/debootstrap.log"
cleanup() { umount -R "$root/dev" 2>/dev/null || true; umount "$root/proc" "$root/sys" 2>/dev/null || true; }
trap cleanup EXIT
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t sysfs sys "$root/sys"
cp /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
git clone -q "$repo" "$root/root/audistill"
echo "packages in the bare system: $(chroot "$root" dpkg-query -W | wc -l)"
chroot "$root" /bin/bash -c 'cd /root/audistill && export DEBIAN_FRONTEND=noninteractive && time bash scripts/demo.sh' 2>&1 | tee "$dir/demo.log"
grep -E "Start-Date|End-Date" "$root/var/log/apt/history.log" || true
