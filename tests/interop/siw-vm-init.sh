#!/bin/sh
# PID 1 of the siw test guest (tests/interop/siw-vm.sh installs it as /usr/local/sbin/siw-vm-init).
#
# Brings up the network and the kernel's soft-iWARP (siw) devices, mounts the host's eca-iwarp
# build (9p, read-only) when it is offered, then serves a line-based command channel on the
# second serial port (ttyS1): each line the host writes is "<id> <command>"; the command is run
# by sh, its output goes back on the same port followed by "__EOC__ <id> <exit status>".
# The command "poweroff" ends the guest.
# The guest's address comes from the kernel command line (siwvm.ip=A.B.C.D/NN).
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /mnt
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts

say() { echo "siw-vm-init: $*" > /dev/ttyS0; }

ip=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in siwvm.ip=*) ip="${arg#siwvm.ip=}" ;; esac
done

modprobe virtio_net 2>/dev/null
ip link set lo up
ip link set eth0 up
[ -n "$ip" ] && ip addr add "$ip" dev eth0

# siw on eth0 talks to the host; siw on lo carries the in-guest siw<->siw comparison.
modprobe siw || say "modprobe siw failed"
rdma link add siw0 type siw netdev eth0 || say "rdma link add siw0 failed"
rdma link add siw_lo type siw netdev lo || say "rdma link add siw_lo failed"

if modprobe 9pnet_virtio 2>/dev/null && modprobe 9p 2>/dev/null; then
  mkdir -p /mnt/eca
  mount -t 9p -o trans=virtio,version=9p2000.L,ro ecabuild /mnt/eca 2>/dev/null \
    || rmdir /mnt/eca
fi

say "ready: $(uname -r) ip=$ip"
stty -F /dev/ttyS1 raw -echo 2>/dev/null
exec 3<>/dev/ttyS1
echo "__READY__" >&3
while IFS= read -r line <&3; do
  id=${line%% *}
  cmd=${line#* }
  [ "$cmd" = "poweroff" ] && break
  sh -c "$cmd" >&3 2>&1 </dev/null
  echo "__EOC__ $id $?" >&3
done
sync
echo o > /proc/sysrq-trigger
sleep 5
