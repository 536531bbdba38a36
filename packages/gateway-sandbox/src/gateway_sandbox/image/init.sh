#!/bin/sh
# gateway guest init (pid 1): mount the scratch filesystems, then become the agent.
# The root filesystem is read-only and shared; /work, /tmp, /run and /dev/shm are tmpfs.
# Kernel command line: gateway.agent=vsock:PORT (default vsock:52) or gateway.agent=tty:DEV
PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
export PATH HOME=/work LANG=C.UTF-8 TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
# A writable drive (the sandbox's disk_mb quota) is /work when the VM has one.
if [ -b /dev/vdb ]; then
    mount -t ext4 -o nodev /dev/vdb /work
else
    mount -t tmpfs -o mode=0755,nodev tmpfs /work
fi
echo sandbox > /proc/sys/kernel/hostname
agent=vsock:52
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        gateway.agent=*) agent="${arg#gateway.agent=}" ;;
    esac
done
cd /work
case "$agent" in
    vsock:*) exec python3 -I /opt/gateway-agent/agent.py --vsock "${agent#vsock:}" --workdir /work --tmpdir /tmp ;;
    tty:*) exec python3 -I /opt/gateway-agent/agent.py --tty "${agent#tty:}" --workdir /work --tmpdir /tmp ;;
esac
echo "gateway-init: unknown gateway.agent=$agent" >&2
exec sleep infinity
