#!/bin/sh
# check.sh — can this host run the testbed? Exit 0 if yes (possibly after
# `make testbed-deps` installs the missing packages), else print why and how to
# run only the host suite, and exit 1.
#
# Usage: testbed/check.sh [HOST_TARGET]

host_target=${1:-test-host}
missing=
for c in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio depmod:kmod \
	ib_write_bw:perftest ibv_devices:ibverbs-utils rdma:iproute2 dpkg-deb:dpkg; do
	cmd=${c%%:*}
	command -v "$cmd" >/dev/null 2>&1 || [ -x "/sbin/$cmd" ] || [ -x "/usr/sbin/$cmd" ] ||
		missing="$missing ${c#*:}"
done
[ -x /bin/busybox ] || missing="$missing busybox-static"
[ -f /usr/include/infiniband/verbs.h ] || missing="$missing libibverbs-dev"
[ -n "$(ls /usr/lib/*/libibverbs/librxe-rdmav*.so 2>/dev/null)" ] || missing="$missing ibverbs-providers"
if [ "$(uname -m)" != x86_64 ] || [ "$(uname -s)" != Linux ]; then
	echo "testbed: cannot run here: needs a Linux x86_64 host (this is $(uname -sm))."
	echo "testbed: run only the host suite with: make $host_target"
	exit 1
fi
if [ -z "$missing" ]; then
	exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "testbed: missing packages:$missing (make testbed-deps installs them)"
	exit 0
fi
why=
[ "$(id -u)" = 0 ] || why="not root"
command -v apt-get >/dev/null 2>&1 || why="${why:+$why, }no apt-get"
echo "testbed: cannot run here: missing packages:$missing, and cannot install them ($why)."
echo "testbed: install them as root (sudo make testbed-deps, or apt-get install$missing),"
echo "testbed: or run only the host suite with: make $host_target"
exit 1
