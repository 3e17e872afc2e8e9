# setup.sh — sourced (with the host's /bin/sh) by the per-VM script the runner
# writes, after init has chrooted into the host root overlay. Brings up the
# network and rxe0, tells the runner the guest is ready, and optionally runs
# the ib_write_bw self-check. Reads RXFER_VM_INDEX, RXFER_VM_COUNT,
# RXFER_VM_IP, RXFER_PEER_IP, RXFER_MTU, RXFER_SELFCHECK.

tb_fail() {
	echo "testbed: $*" >&2
	exit 125
}

ip link set lo up || tb_fail "ip link set lo up"
ip link set eth0 mtu "${RXFER_MTU:-9000}" up || tb_fail "cannot bring eth0 up"
ip addr add "$RXFER_VM_IP/24" dev eth0 || tb_fail "cannot address eth0"
# Set the MTU before adding rxe: rxe derives active_mtu from it (4096 at 9000).
rdma link add rxe0 type rxe netdev eth0 || tb_fail "rdma link add rxe0 failed"
i=0
until rdma link show rxe0/1 2>/dev/null | grep -q 'state ACTIVE'; do
	i=$((i + 1))
	[ $i -lt 100 ] || tb_fail "rxe0 port 1 never became ACTIVE: $(rdma link show 2>&1)"
	sleep 0.1
done
echo "RXFER-TESTBED-READY vm$RXFER_VM_INDEX (guest uptime $(cut -d" " -f1 /proc/uptime)s) $(rdma link show rxe0/1)"

# tb_bw_client HOST: run the ib_write_bw client until the server listens, and
# print the 1 MiB average in MB/s on one line the runner and people can grep.
tb_bw_client() {
	n=0
	while :; do
		out=$(ib_write_bw -d rxe0 -x 1 -F -s 1048576 -n 100 "$1" 2>&1) && break
		n=$((n + 1))
		[ $n -lt 40 ] || { echo "$out"; tb_fail "ib_write_bw client to $1 failed"; }
		sleep 0.25
	done
	echo "$out"
	echo "RXFER-TESTBED-IB-WRITE-BW $(echo "$out" | awk '$1 == 1048576 { print $4 " MB/s (1 MiB, avg)" }') vm$RXFER_VM_INDEX->$1"
}

if [ "${RXFER_SELFCHECK:-0}" = 1 ]; then
	echo "testbed: self-check: ib_write_bw on rxe0 (GID index 1, 1 MiB x 100)"
	if [ "$RXFER_VM_COUNT" = 1 ]; then
		ib_write_bw -d rxe0 -x 1 -F -s 1048576 -n 100 >/tmp/ib_write_bw.server 2>&1 &
		tb_bw_client 127.0.0.1
		wait $! || { cat /tmp/ib_write_bw.server; tb_fail "ib_write_bw server failed"; }
	elif [ "$RXFER_VM_INDEX" = 0 ]; then
		ib_write_bw -d rxe0 -x 1 -F -s 1048576 -n 100 >/tmp/ib_write_bw.server 2>&1 ||
			{ cat /tmp/ib_write_bw.server; tb_fail "ib_write_bw server failed"; }
		echo "testbed: ib_write_bw server done"
	else
		tb_bw_client "$RXFER_PEER_IP"
	fi
fi
