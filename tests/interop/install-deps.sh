#!/usr/bin/env bash
# Host packages for tests/interop/siw-vm.sh (not needed to build or to run the test suite).
set -euo pipefail
PACKAGES=(debootstrap qemu-system-x86 e2fsprogs iproute2 coreutils)
missing=()
for p in "${PACKAGES[@]}"; do
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) == installed ]] || missing+=("$p")
done
((${#missing[@]})) || { echo "interop install-deps: all packages installed"; exit 0; }
[[ $(id -u) -eq 0 ]] || { echo "interop install-deps: missing ${missing[*]}; run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${missing[@]}"
