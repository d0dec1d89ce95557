#!/usr/bin/env bash
# Interoperability and performance check of eca-iwarp against the Linux kernel's soft-iWARP
# (siw) in a QEMU guest. Not part of ctest (a run takes minutes); see docs/interop.md.
#
#   tests/interop/siw-vm.sh [image|run|all]      (as root; default: all)
#
#   image  builds the guest once: debootstrap of Debian 12 with linux-image-amd64, rdma-core,
#          perftest, rping; packed into an ext4 image (SIW_VM_DIR, default build-siw-vm/)
#   run    boots the guest inside a network namespace made for the run and runs
#          Debian's rping and perftest between siw (guest) and this build (host, eca-run) in
#          both directions and each ECA_MPA_CRC value, then the same-boot performance comparison
#   all    image (when missing or stale), then run
#
# Environment:
#   ECA_BUILD        eca-iwarp build directory (default <repo>/build)
#   SIW_VM_DIR       guest image and results (default <repo>/build-siw-vm)
#   SIW_VM_ACCEL     tcg (default) or kvm (where nested KVM works; see docs/interop.md)
#   SIW_VM_CPUS      guest vCPUs (default 2); SIW_VM_MEM guest MiB (default 1024)
#   SIW_VM_CRC       our CRC settings to test (default "1 0 req"; req: ECA_MPA_CRC_REQUIRED=1)
#   SIW_VM_TESTS     interop tests (default "rping write_bw read_bw send_bw write_lat")
#   SIW_VM_SIW_MODES siw builds to test against (default "default crc-required crc-strict")
#   SIW_VM_DIRS      who initiates (default "siw-to-eca eca-to-siw")
#   SIW_VM_PERF      1: run the performance comparison (default 1)
#   SIW_VM_REPEAT    runs per performance figure, the median is reported (default 3)
#   SIW_VM_TIMEOUT   seconds one test may take before it counts as hung (default 30; kvm 20)
#   SIW_VM_DURATION  seconds per bandwidth run (-D, default 2); SIW_VM_LAT_ITERS (default 1000)
#   SIW_VM_SIW_DEBUG 1: siw's dynamic debug messages on (in each test's .dmesg file)
#   SIW_VM_ECA_LOG   ECA_LOG for our stack on the host (default info: the negotiated MPA mode)
#   SIW_VM_PCAP      1: capture the tap (dumpcap, first SIW_VM_PCAP_SNAPLEN=256 bytes of each frame)
#
# Networking stays inside one namespace: a tap device in it carries 10.214.77.0/24 between
# the host side (10.214.77.1, where our stack runs) and the guest (10.214.77.2). The trap
# removes the namespace (and the tap with it) and stops QEMU.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ECA_BUILD=${ECA_BUILD:-$REPO/build}
VMDIR=${SIW_VM_DIR:-$REPO/build-siw-vm}
CPUS=${SIW_VM_CPUS:-2}
MEM=${SIW_VM_MEM:-1024}
CRC_MODES=${SIW_VM_CRC:-1 0 req}
TESTS=${SIW_VM_TESTS:-rping write_bw read_bw send_bw write_lat}
SIW_MODES=${SIW_VM_SIW_MODES:-default crc-required crc-strict}
DIRS=${SIW_VM_DIRS:-siw-to-eca eca-to-siw}
DO_PERF=${SIW_VM_PERF:-1}
REPEAT=${SIW_VM_REPEAT:-3}
DURATION=${SIW_VM_DURATION:-2}
LAT_ITERS=${SIW_VM_LAT_ITERS:-1000}
RPING_COUNT=${SIW_VM_RPING_COUNT:-20}
MIRROR=${SIW_VM_MIRROR:-}
GUEST_PACKAGES=linux-image-amd64,rdma-core,ibverbs-providers,ibverbs-utils,rdmacm-utils,perftest,iproute2,kmod,procps,libisal2

NET=10.214.77
HOST_IP=$NET.1
GUEST_IP=$NET.2
TAP=siwtap0

log() { echo "siw-vm: $*" >&2; }
die() { log "$*"; exit 1; }

# ---------------------------------------------------------------------------- image

# The mirror apt already uses (deb822 or one-line sources), so the image needs no other host.
apt_mirror() {
  [[ -n "$MIRROR" ]] && { echo "$MIRROR"; return; }
  local m
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1)
  [[ -z "$m" ]] && m=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                         | awk '$3 ~ /^bookworm$/ {print $2}' | head -n1)
  echo "${m:-http://deb.debian.org/debian}"
}

build_image() {
  local root=$VMDIR/rootfs
  command -v debootstrap >/dev/null && command -v mkfs.ext4 >/dev/null \
    || die "debootstrap/mkfs.ext4 missing: bash tests/interop/install-deps.sh"
  mkdir -p "$VMDIR/debs"
  if [[ ! -e $root/.siw-vm-debootstrap ]]; then
    rm -rf "$root"
    log "debootstrap bookworm into $root (several minutes)"
    debootstrap --variant=minbase --cache-dir="$VMDIR/debs" --include="$GUEST_PACKAGES" \
      bookworm "$root" "$(apt_mirror)" > "$VMDIR/debootstrap.log" 2>&1 \
      || die "debootstrap failed, see $VMDIR/debootstrap.log"
    touch "$root/.siw-vm-debootstrap"
  fi
  [[ -e $root/.siw-vm-module ]] || build_siw_module "$root"
  install -m 0755 "$HERE/siw-vm-init.sh" "$root/usr/local/sbin/siw-vm-init"
  local kernel initrd
  kernel=$(ls "$root"/boot/vmlinuz-* 2>/dev/null | sort -V | tail -n1)
  initrd=$(ls "$root"/boot/initrd.img-* 2>/dev/null | sort -V | tail -n1)
  [[ -n "$kernel" && -n "$initrd" ]] || die "no kernel/initrd in $root/boot"
  cp "$kernel" "$VMDIR/vmlinuz"
  cp "$initrd" "$VMDIR/initrd.img"
  log "packing $VMDIR/root.img"
  rm -f "$VMDIR/root.img"
  mkfs.ext4 -q -F -L siwroot -d "$root" "$VMDIR/root.img" 2G >/dev/null \
    || die "mkfs.ext4 -d failed"
  sha256sum "$HERE/siw-vm-init.sh" | awk '{print $1}' > "$VMDIR/root.img.stamp"
}

# Debian 12's kernel is built without CONFIG_RDMA_SIW, so the guest gets siw.ko built from
# the matching linux-source-6.1 package against the image's own kernel headers, inside the
# image (chroot); the build tools are removed again afterwards. siw 6.1 has no module
# parameters for MPA CRC (mpa_crc_required and mpa_crc_strict are compile-time constants), so
# two more builds flip them: /usr/local/lib/siw-variants/siw-crc-required.ko (asks for CRC,
# refuses a reply without) and siw-crc-strict.ko (never CRC: rejects a request or reply with it).
build_siw_module() {
  local root=$1 kver
  kver=$(ls "$root/lib/modules" | sort -V | tail -n1)
  log "building siw.ko for $kver in the image (several minutes)"
  mkdir -p "$root/usr/src/siw-build"
  cp "$VMDIR"/debs/linux-source-6.1_*.deb "$root/usr/src/siw-build/" 2>/dev/null
  cat > "$root/usr/src/siw-build/build.sh" <<'SCRIPT'
set -eu
export DEBIAN_FRONTEND=noninteractive
kver=$1
ver=$(dpkg-query -W -f='${Version}' "linux-image-$kver")
cd /usr/src/siw-build
apt-get update -qq
apt-get install -y -qq --no-install-recommends "linux-headers-$kver" make xz-utils
[ -e "linux-source-6.1_${ver}_all.deb" ] || apt-get download -qq "linux-source-6.1=$ver"
dpkg-deb --fsys-tarfile "linux-source-6.1_${ver}_all.deb" | tar -xO ./usr/src/linux-source-6.1.tar.xz \
  | tar -xJ linux-source-6.1/drivers/infiniband/sw/siw
src=/usr/src/siw-build/linux-source-6.1/drivers/infiniband/sw/siw
mkdir -p /usr/local/lib/siw-variants
for variant in default crc-required crc-strict; do
  rm -rf "$variant" && cp -r "$src" "$variant"
  case $variant in
    crc-required) sed -i 's/^const bool mpa_crc_required;/const bool mpa_crc_required = true;/' "$variant/siw_main.c"
                  grep -q '^const bool mpa_crc_required = true;' "$variant/siw_main.c" ;;
    crc-strict)   sed -i 's/^const bool mpa_crc_strict;/const bool mpa_crc_strict = true;/' "$variant/siw_main.c"
                  grep -q '^const bool mpa_crc_strict = true;' "$variant/siw_main.c" ;;
  esac
  make -C "/usr/src/linux-headers-$kver" M="$PWD/$variant" CONFIG_RDMA_SIW=m modules
  install -D -m 0644 "$variant/siw.ko" "/usr/local/lib/siw-variants/siw-$variant.ko"
done
install -D -m 0644 /usr/local/lib/siw-variants/siw-default.ko "/lib/modules/$kver/updates/siw.ko"
depmod -a "$kver"
apt-get purge -y -qq --autoremove "linux-headers-$kver" make xz-utils
apt-get clean
SCRIPT
  mount -t proc proc "$root/proc" || die "mount proc in $root failed"
  chroot "$root" /bin/sh /usr/src/siw-build/build.sh "$kver" > "$VMDIR/siw-module.log" 2>&1
  local rc=$?
  umount "$root/proc"
  cp -n "$root"/usr/src/siw-build/linux-source-6.1_*.deb "$VMDIR/debs/" 2>/dev/null
  rm -rf "$root/usr/src/siw-build"
  ((rc == 0)) || die "building siw.ko failed, see $VMDIR/siw-module.log"
  touch "$root/.siw-vm-module"
}

image_current() {
  [[ -e $VMDIR/root.img && -e $VMDIR/vmlinuz && -e $VMDIR/root.img.stamp ]] || return 1
  [[ $(sha256sum "$HERE/siw-vm-init.sh" | awk '{print $1}') == $(cat "$VMDIR/root.img.stamp") ]]
}

# ---------------------------------------------------------------------------- guest

NS=""
QEMU_PID=""
HOST_PIDS=()
CTL_R=""
CTL_W=""
SEQ=0
RUN=""

CAPTURE_PID=""
BOOTS=0

stop_guest() {
  if [[ -n "$QEMU_PID" ]]; then
    local i
    if [[ -n "$CTL_W" ]] && kill -0 "$QEMU_PID" 2>/dev/null; then printf '0 poweroff\n' >&"$CTL_W" 2>/dev/null; fi
    for ((i = 0; i < 50; i++)); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
    kill -TERM "$QEMU_PID" 2>/dev/null
    wait "$QEMU_PID" 2>/dev/null
  fi
  QEMU_PID=""
}

cleanup() {
  local p
  for p in "${HOST_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  stop_guest
  for p in "${HOST_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if [[ -n "$CAPTURE_PID" ]]; then kill -TERM "$CAPTURE_PID" 2>/dev/null; wait "$CAPTURE_PID" 2>/dev/null; fi
  [[ -n "$NS" ]] && ip netns del "$NS" 2>/dev/null
  NS=""; CAPTURE_PID=""
}

guest_alive() { [[ -n "$QEMU_PID" ]] && kill -0 "$QEMU_PID" 2>/dev/null; }

# vm_cmd TIMEOUT COMMAND: runs COMMAND (sh) in the guest; prints its output and returns its
# exit status, 124 when the guest does not answer within TIMEOUT seconds.
vm_cmd() {
  local t=$1 cmd=$2 line left id=$((++SEQ))
  local deadline=$((SECONDS + t))
  printf '%s %s\n' "$id" "$cmd" >&"$CTL_W"
  while :; do
    left=$((deadline - SECONDS))
    ((left > 0)) || { log "guest gave no answer within ${t}s to: $cmd"; return 124; }
    guest_alive || { log "guest is down (see $RUN/console-$BOOTS.log)"; return 125; }
    IFS= read -r -t 1 -u "$CTL_R" line || continue
    line=${line%$'\r'}
    if [[ $line == "__EOC__ "* ]]; then
      set -- $line
      [[ $2 == "$id" ]] && return "$3"
      continue   # the late answer to a command that timed out
    fi
    printf '%s\n' "$line"
  done
}

setup_net() {
  NS=eca-siw-$$
  ip netns add "$NS" || die "ip netns add failed"
  ip -n "$NS" link set lo up
  ip -n "$NS" tuntap add dev "$TAP" mode tap || die "tuntap add failed"
  ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP"
  ip -n "$NS" link set "$TAP" up

  if [[ ${SIW_VM_PCAP:-0} == 1 ]]; then
    ip netns exec "$NS" dumpcap -q -i "$TAP" -s "${SIW_VM_PCAP_SNAPLEN:-256}" -w "$RUN/tap.pcapng" \
      >"$RUN/dumpcap.log" 2>&1 </dev/null &
    CAPTURE_PID=$!
  fi
  mkfifo "$RUN/ctl.in" "$RUN/ctl.out"
  exec {CTL_W}<>"$RUN/ctl.in"
  exec {CTL_R}<>"$RUN/ctl.out"
}

# start_guest: boots the guest (again, after a crash) and waits for its command channel.
start_guest() {
  local accel=${SIW_VM_ACCEL:-tcg} cpu=max line
  [[ $accel == kvm ]] && cpu=host,-arch-capabilities
  ACCEL=$accel
  BOOTS=$((BOOTS + 1))
  while IFS= read -r -t 0.1 -u "$CTL_R" line; do :; done   # what a crashed guest left unread
  local virtfs=()
  [[ -d $ECA_BUILD/lib ]] && virtfs=(-virtfs "local,path=$ECA_BUILD,mount_tag=ecabuild,security_model=none,readonly=on")
  log "booting guest ($accel, $CPUS vCPUs, $MEM MiB)"
  ip netns exec "$NS" qemu-system-x86_64 -nographic -monitor none -no-reboot \
    -accel "$accel" -cpu "$cpu" -smp "$CPUS" -m "$MEM" \
    -kernel "$VMDIR/vmlinuz" -initrd "$VMDIR/initrd.img" \
    -append "root=/dev/vda ro console=ttyS0 panic=1 net.ifnames=0 init=/usr/local/sbin/siw-vm-init siwvm.ip=$GUEST_IP/24" \
    -drive "file=$VMDIR/root.img,format=raw,if=virtio,snapshot=on" \
    -netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" \
    -device virtio-net-pci,netdev=n0,mac=52:54:00:5e:77:02 \
    "${virtfs[@]}" \
    -serial "file:$RUN/console-$BOOTS.log" -chardev "pipe,id=ctl,path=$RUN/ctl" -serial chardev:ctl \
    </dev/null >"$RUN/qemu.log" 2>&1 &
  QEMU_PID=$!

  local boot_limit=600 t0=$SECONDS
  [[ $accel == kvm ]] && boot_limit=120
  local deadline=$((SECONDS + boot_limit))
  while :; do
    guest_alive || die "qemu exited during boot (see $RUN/qemu.log, $RUN/console-$BOOTS.log)"
    ((SECONDS < deadline)) || die "guest not ready in time (see $RUN/console-$BOOTS.log)"
    IFS= read -r -t 5 -u "$CTL_R" line || continue
    [[ ${line%$'\r'} == "__READY__" ]] && break
  done
  BOOT_SECONDS=$((SECONDS - t0))
  log "guest ready after ${BOOT_SECONDS}s (boot $BOOTS)"
  SIW_MODE=default
  vm_cmd 30 'uname -r; rdma link show; ibv_devices; ls /sys/module/siw/parameters 2>/dev/null | sed "s/^/siw parameter: /"; modinfo -F parm siw | sed "s/^/siw modinfo parm: /"; [ -e /mnt/eca/lib/libibverbs.so.1 ] && echo "eca build mounted"' \
    >"$RUN/guest-info.txt" 2>&1
  ((BOOTS == 1)) && cat "$RUN/guest-info.txt" >&2
  vm_cmd 15 "dmesg -c" >"$RUN/boot-$BOOTS.dmesg" 2>&1
  if [[ ${SIW_VM_SIW_DEBUG:-0} == 1 ]]; then
    vm_cmd 15 "mount -t debugfs none /sys/kernel/debug; echo 'module siw +p' > /sys/kernel/debug/dynamic_debug/control" >&2
  fi
}

# ---------------------------------------------------------------------------- tests

PORT=19000

# host_bg LOG CRC CMD...: runs CMD (an RDMA program) in the namespace with this build's
# libraries, bounded by the test timeout; sets HOST_PID. CRC: 1 or 0 (ECA_MPA_CRC), or req
# (ECA_MPA_CRC=1 ECA_MPA_CRC_REQUIRED=1).
host_bg() {
  local out=$1 crc=$2 req=0; shift 2
  [[ $crc == req ]] && crc=1 req=1
  ip netns exec "$NS" env ECA_MPA_CRC="$crc" ECA_MPA_CRC_REQUIRED="$req" ECA_LOG="${SIW_VM_ECA_LOG:-info}" timeout -k 3 "$TIMEOUT" \
    "$ECA_BUILD/bin/eca-run" "$@" >"$out" 2>&1 </dev/null &
  HOST_PID=$!
  HOST_PIDS+=("$HOST_PID")
}

host_wait() { local rc; wait "$1"; rc=$?; HOST_PIDS=("${HOST_PIDS[@]/$1}"); return $rc; }

# host_listening PORT: until something listens on PORT in the namespace (bounded).
host_listening() {
  local i
  for ((i = 0; i < 20 * TIMEOUT; i++)); do
    [[ -n $(ip netns exec "$NS" ss -Hltn "sport = :$1") ]] && return 0
    kill -0 "$HOST_PID" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# guest_bg NAME CMD: starts CMD in the guest, bounded by the test timeout.
guest_bg() {
  vm_cmd 15 "rm -f /tmp/$1.rc; (timeout -k 3 $TIMEOUT $2 >/tmp/$1.log 2>&1; echo \$? >/tmp/$1.rc) >/dev/null 2>&1 &"
}
# guest_wait NAME: waits for a guest_bg command; prints its output; returns its status.
guest_wait() {
  vm_cmd $((TIMEOUT + 15)) "while [ ! -e /tmp/$1.rc ]; do sleep 0.1; done; cat /tmp/$1.log; exit \$(cat /tmp/$1.rc)"
}
guest_listening() {
  vm_cmd $((TIMEOUT + 15)) "i=0; while [ \$i -lt $((10 * TIMEOUT)) ]; do ss -Hltn 'sport = :$1' | grep -q . && exit 0; [ -e /tmp/$2.rc ] && exit 1; sleep 0.1; i=\$((i+1)); done; exit 1"
}

# Arguments of each test: server side; the client adds the server's address.
test_args() {  # TEST DEVICE PORT
  case $1 in
    rping)     echo "rping -V -v -C $RPING_COUNT -p $3" ;;
    write_bw)  echo "ib_write_bw -R -F -d $2 -p $3 -s 65536 -D $DURATION" ;;
    read_bw)   echo "ib_read_bw -R -F -d $2 -p $3 -s 65536 -D $DURATION" ;;
    send_bw)   echo "ib_send_bw -R -F -d $2 -p $3 -s 65536 -D $DURATION" ;;
    write_lat) echo "ib_write_lat -R -F -d $2 -p $3 -s 2 -n $LAT_ITERS" ;;
    *) die "unknown test $1" ;;
  esac
}
server_args() { local a; a=$(test_args "$1" "$2" "$3"); [[ $1 == rping ]] && a="rping -s -a $4 ${a#rping }"; echo "$a"; }
client_args() { local a; a=$(test_args "$1" "$2" "$3"); [[ $1 == rping ]] && echo "rping -c -a $4 ${a#rping }" || echo "$a $4"; }

# rping_ok FILE: the client's output shows every iteration completed and validated (-v prints
# one "ping data:" line each); rping's exit status alone says nothing: it is 0 after an early
# DISCONNECT as well.
rping_ok() {
  [[ $(grep -c '^ping data: ' "$1") -eq $RPING_COUNT ]] && ! grep -qiE 'mismatch|error|fail|state 10' "$1"
}

# figure TEST CLIENT_LOG SERVER_LOG: the measured value in perftest's result line (MB/s
# average, or typical latency in µs); empty when there is none. ib_send_bw's sender prints
# 0.00 in duration mode (-D), so its figure is the receiver's (the server's).
figure() {
  case $1 in
    send_bw) awk '/#bytes/ {h=1; next} h && $1 ~ /^[0-9]+$/ {print $4; exit}' "$3" ;;
    *_bw)  awk '/#bytes/ {h=1; next} h && $1 ~ /^[0-9]+$/ {print $4; exit}' "$2" ;;
    *_lat) awk '/#bytes/ {h=1; next} h && $1 ~ /^[0-9]+$/ {print $5; exit}' "$2" ;;
    *) ;;
  esac
}

RESULTS=()
SIW_MODE=default
record() {
  RESULTS+=("$(printf '%-12s %-10s %-9s %-9s %-8s %-7s %s' "$SIW_MODE" "$1" "$2" "$3" "$4" "$5" "$6")")
  log "siw $SIW_MODE: $1 $2 $3 (expect $4): $5 $6"
}

# expected_mpa SIW_BUILD OURS INITIATOR: what the MPA exchange should settle on, from RFC 5044
# and the rules each side states: crc, nocrc or refused. siw (6.1 source) asks for CRC only
# when built crc-required, echoes the Request's C bit as responder, and when built crc-strict
# rejects a Request or Reply with C=1. We ask for CRC with ECA_MPA_CRC=1 and, as responder,
# reply C=1 only to a Request with C=1 unless ECA_MPA_CRC_REQUIRED=1 (OURS=req).
expected_mpa() {
  local siw=$1 ours=$2 init=$3 c=0
  if [[ $init == siw ]]; then
    [[ $siw == crc-required || $ours == req ]] && c=1
  else
    [[ $ours != 0 ]] && c=1
  fi
  if [[ $siw == crc-strict && $c == 1 ]]; then echo refused; elif ((c)); then echo crc; else echo nocrc; fi
}

# restart_guest: boots a fresh guest after a crash and loads the siw build in use before.
restart_guest() {
  local mode=$SIW_MODE
  stop_guest
  start_guest
  siw_mode "$mode" || log "siw $mode could not be reloaded after the restart"
}

# siw_mode MODE: reloads siw in the guest as the build MODE (default, crc-required, crc-strict).
siw_mode() {
  [[ $1 == "$SIW_MODE" ]] && return 0
  log "switching siw to $1"
  vm_cmd 120 "rdma link delete siw0; rdma link delete siw_lo; rmmod siw && insmod /usr/local/lib/siw-variants/siw-$1.ko && rdma link add siw0 type siw netdev eth0 && rdma link add siw_lo type siw netdev lo" >&2 \
    || { log "could not reload siw as $1"; return 1; }
  SIW_MODE=$1
}

# interop TEST DIRECTION CRC. DIRECTION siw-to-eca: siw (guest) initiates, our stack serves;
# eca-to-siw: our stack initiates, siw serves.
interop() {
  local t=$1 dir=$2 crc=$3 port=$((PORT++)) name="$SIW_MODE-$1-$2-crc$3" grc hrc start=$SECONDS
  local hlog=$RUN/$name.host.log glog=$RUN/$name.guest.log
  if [[ $dir == siw-to-eca ]]; then
    host_bg "$hlog" "$crc" $(server_args "$t" "ecasw_$TAP" "$port" "$HOST_IP")
    if host_listening "$port"; then
      vm_cmd $((TIMEOUT + 15)) "timeout -k 3 $TIMEOUT $(client_args "$t" siw0 "$port" "$HOST_IP")" >"$glog" 2>&1
      grc=$?
    else
      grc=255; echo "our server never listened" >"$glog"
    fi
    host_wait "$HOST_PID"; hrc=$?
  else
    guest_bg "$name" "$(server_args "$t" siw0 "$port" "$GUEST_IP")" >/dev/null
    if guest_listening "$port" "$name" >/dev/null; then
      host_bg "$hlog" "$crc" $(client_args "$t" "ecasw_$TAP" "$port" "$GUEST_IP")
      host_wait "$HOST_PID"; hrc=$?
    else
      hrc=255; echo "siw server never listened" >"$hlog"
    fi
    guest_wait "$name" >"$glog" 2>&1; grc=$?
  fi
  local crashed=0
  if guest_alive; then
    vm_cmd 15 "dmesg -c" >"$RUN/$name.dmesg" 2>&1
  else
    crashed=1
  fi
  local verdict=PASS note f="" clog=$glog init=siw expect
  [[ $dir == eca-to-siw ]] && clog=$hlog init=eca
  expect=$(expected_mpa "$SIW_MODE" "$crc" "$init")
  if [[ $expect == refused ]]; then
    # The initiator must fail promptly. The server may exit 0 (rping does) or, when siw
    # refused the request below rdma_cm, never hear of it and wait for its timeout.
    local irc=$hrc
    [[ $init == siw ]] && irc=$grc
    verdict=REFUSED
    ((irc == 0)) && verdict=FAIL
    ((irc == 124)) && verdict=HANG
  elif ((grc == 124 || hrc == 124)); then
    verdict=HANG
  elif ((grc != 0 || hrc != 0)); then
    verdict=FAIL
  elif [[ $t == rping ]]; then
    rping_ok "$clog" || verdict=FAIL
  else
    local slog=$hlog
    [[ $dir == eca-to-siw ]] && slog=$glog
    f=$(figure "$t" "$clog" "$slog")
    [[ -n $f && -n $(figure "$t" "$slog" "$clog") ]] || verdict=FAIL
  fi
  note="guest rc $grc, host rc $hrc, $((SECONDS - start))s"
  if ((crashed)); then
    verdict=CRASH
    note="guest kernel died, see console-$BOOTS.log: $(grep -m1 -E 'BUG:|RIP:|panic' "$RUN/console-$BOOTS.log" | sed 's/^\[[^]]*\] //'); $note"
  fi
  # What MPA settled on, from our log ("connected: mpa rev N, crc C, ..."): must be the expected.
  local got
  got=$(grep -m1 -o 'connected: mpa rev [0-9], crc [01]' "$hlog" | awk '{print ($NF == 1) ? "crc" : "nocrc"}')
  if [[ -n $got ]]; then
    note="mpa $got; $note"
    # As responder we log "connected" before siw, the initiator, refuses our Reply.
    [[ $expect != refused && $got != "$expect" && $verdict != HANG && $verdict != CRASH ]] && verdict=FAIL
  fi
  [[ $t == rping ]] && note="$(grep -c '^ping data: ' "$clog") of $RPING_COUNT pings; $note"
  [[ -n $f ]] && note="$f $( [[ $t == *_lat ]] && echo us || echo MB/s ); $note"
  record "$t" "$init" "crc=$crc" "$expect" "$verdict" "$note"
  ((crashed)) && restart_guest
  return 0
}

# Performance: each figure is the median of REPEAT runs. A failed or hung run ends the
# series; a run that printed 0.00 (perftest could not calibrate the guest's cycle counter,
# "Correlation coefficient r^2 < 0.9", which happens under TCG on a loaded host) is
# repeated, at most REPEAT extra times.
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR + 1) / 2)]}'; }

# perf_median FUNCTION TEST ARG (runs in a command substitution: ports are taken from PORT
# upwards and the caller moves PORT on; a guest that died is restarted by the caller).
perf_median() {
  local fn=$1 t=$2 arg=$3 v vals=() tries=0
  while ((${#vals[@]} < REPEAT && tries < 2 * REPEAT)); do
    tries=$((tries + 1))
    guest_alive || break
    v=$("$fn" "$t" "$arg" "$((PORT++))" "$tries")
    [[ -n $v ]] || break
    [[ $v == 0.00 ]] || vals+=("$v")
  done
  printf '%s\n' "${vals[@]}" | grep . | median
}

# perf_guest_pair TEST WHO PORT N: both ends in the guest, on its own address (the kernel
# carries it over lo; rdma_cm cannot resolve 127.0.0.1 to a siw device). WHO: siw | eca1 |
# eca0 (ours with ECA_MPA_CRC=1/0, libraries from the 9p-mounted build). Prints the figure.
perf_guest_pair() {
  local t=$1 who=$2 port=$3 name="perf-$1-$2-$4" dev pre=""
  case $who in
    siw) dev=siw0 ;;
    eca*) dev=ecasw_eth0; pre="env LD_LIBRARY_PATH=/mnt/eca/lib ECA_MPA_CRC=${who#eca}" ;;
  esac
  guest_bg "$name" "$pre $(server_args "$t" "$dev" "$port" "$GUEST_IP")" >/dev/null
  if guest_listening "$port" "$name" >/dev/null; then
    vm_cmd $((TIMEOUT + 15)) "timeout -k 3 $TIMEOUT $pre $(client_args "$t" "$dev" "$port" "$GUEST_IP")" \
      >"$RUN/$name.client.log" 2>&1
  fi
  guest_wait "$name" >"$RUN/$name.server.log" 2>&1
  figure "$t" "$RUN/$name.client.log" "$RUN/$name.server.log"
}

# perf_host_siw TEST CRC PORT N: our stack on the host initiating to siw in the guest over
# the tap. Prints the figure.
perf_host_siw() {
  local t=$1 crc=$2 port=$3 name="perf-$1-host-eca$2-siw-$4"
  guest_bg "$name" "$(server_args "$t" siw0 "$port" "$GUEST_IP")" >/dev/null
  if guest_listening "$port" "$name" >/dev/null; then
    host_bg "$RUN/$name.client.log" "$crc" $(client_args "$t" "ecasw_$TAP" "$port" "$GUEST_IP")
    host_wait "$HOST_PID"
  fi
  guest_wait "$name" >"$RUN/$name.server.log" 2>&1
  figure "$t" "$RUN/$name.client.log" "$RUN/$name.server.log"
}

PERF_CRC="1 0"
# perf_cell FUNCTION TEST ARG WIDTH: one figure of the table, appended to ROW.
perf_cell() {
  guest_alive || restart_guest
  local v
  v=$(perf_median "$1" "$2" "$3")
  PORT=$((PORT + 2 * REPEAT))
  ROW+=$(printf " %${4}s" "${v:--}")
  log "perf $2 $1 $3: ${v:-none}"
}

run_perf() {
  local t who crc
  PERF=()
  for t in write_bw read_bw send_bw write_lat; do
    ROW=$(printf '%-10s' "$t")
    for who in siw eca1 eca0; do perf_cell perf_guest_pair "$t" "$who" 12; done
    for crc in $PERF_CRC; do perf_cell perf_host_siw "$t" "$crc" 14; done
    PERF+=("$ROW")
  done
}

run_all() {
  [[ -x $ECA_BUILD/bin/eca-run ]] || die "no $ECA_BUILD/bin/eca-run: build first (bash scripts/build.sh)"
  image_current || die "guest image missing or stale: run '$0 image' first"
  command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: bash tests/interop/install-deps.sh"
  RUN=$VMDIR/results/$(date -u +%Y%m%dT%H%M%SZ)
  mkdir -p "$RUN"
  trap cleanup EXIT
  # A signal arriving while a command substitution runs would wait for it: end our children.
  trap 'pkill -TERM -P $$; exit 130' INT TERM
  local t0=$SECONDS
  setup_net
  start_guest
  TIMEOUT=${SIW_VM_TIMEOUT:-$([[ $ACCEL == kvm ]] && echo 20 || echo 30)}

  local crc t dir mode
  for mode in $SIW_MODES; do
    if ! siw_mode "$mode"; then
      RESULTS+=("$(printf '%-12s could not load this siw build' "$mode")")
      continue
    fi
    for crc in $CRC_MODES; do
      for dir in $DIRS; do
        for t in $TESTS; do interop "$t" "$dir" "$crc"; done
      done
    done
  done
  if [[ $DO_PERF == 1 ]]; then
    siw_mode default && run_perf
  fi

  {
    echo "siw-vm run $(basename "$RUN"): accel $ACCEL, $CPUS vCPUs, guest kernel $(head -n1 "$RUN/guest-info.txt")"
    echo "eca-iwarp $(git -C "$REPO" describe --always --dirty 2>/dev/null), build $ECA_BUILD"
    grep -h '^siw ' "$RUN/guest-info.txt" || echo "siw.ko: no module parameters (MPA CRC behaviour is chosen by the build)"
    echo
    echo "interop (timeout ${TIMEOUT}s per test; siw build: default = no CRC requested, either accepted;"
    echo " crc-required = CRC requested, a reply without refused; crc-strict = CRC never used, refused;"
    echo " ours: crc=1/0 ECA_MPA_CRC, crc=req ECA_MPA_CRC_REQUIRED=1; expect: what MPA should settle on;"
    echo " REFUSED: the initiator failed promptly where refusal is expected):"
    printf '%-12s %-10s %-9s %-9s %-8s %-7s %s\n' "siw build" test initiator ours expect result detail
    printf '%s\n' "${RESULTS[@]}"
    if [[ $DO_PERF == 1 ]]; then
      echo
      echo "performance (median of $REPEAT; bw: 64 KiB MB/s, -D $DURATION; lat: 2 B typical us, -n $LAT_ITERS):"
      printf '%-10s %12s %12s %12s' test "siw<>siw" "eca<>eca c1" "eca<>eca c0"
      for crc in $PERF_CRC; do printf ' %14s' "eca>siw c$crc"; done
      echo
      printf '%s\n' "${PERF[@]}"
      echo "(siw<>siw and eca<>eca: both ends in the guest, on its address; eca>siw: our stack on the host"
      echo " initiating to siw in the guest over the tap)"
    fi
    echo
    echo "wall time $((SECONDS - t0))s (guest booted $BOOTS times, last boot ${BOOT_SECONDS}s)"
  } | tee "$RUN/summary.txt"
  local fails
  fails=$(printf '%s\n' "${RESULTS[@]}" | grep -c -E ' (FAIL|HANG|CRASH) ' || true)
  log "results in $RUN ($fails interop failures)"
  ((fails == 0))
}

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, network namespace, tap)"
case ${1:-all} in
  image) build_image ;;
  run) run_all ;;
  all) image_current || build_image; run_all ;;
  *) die "usage: $0 [image|run|all]" ;;
esac
