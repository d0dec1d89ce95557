#!/usr/bin/env bash
# Installs everything needed to build and test eca-iwarp on Debian 12 (run as root).
# Idempotent: when every package is already installed, apt is not touched at all.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libibverbs-dev librdmacm-dev libboost-dev libisal-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev libcli11-dev
  perftest rdmacm-utils ibverbs-utils qperf sockperf tshark libfabric-bin openmpi-bin libopenmpi-dev python3-pyverbs
  iproute2 iperf3 strace procps python3 coreutils gawk grep sed findutils binutils
  clang-14 libclang-rt-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages (${missing[*]}); run as root" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# tshark pulls wireshark-common, which asks whether non-root users may capture.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update
apt-get install -y --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
