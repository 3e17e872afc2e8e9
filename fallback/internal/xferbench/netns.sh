#!/bin/bash
# Measures the fallback data channel across two network namespaces joined by a veth
# pair, next to iperf3 on the same link. Needs root. Usage (from the repo root):
#   sudo fallback/internal/xferbench/netns.sh [size_MiB]
set -euo pipefail
SIZE_MIB=${1:-1024}
NSA=rxfb-a NSB=rxfb-b IPA=10.99.77.1 IPB=10.99.77.2 PORT=7700
WORK=$(mktemp -d /tmp/xferbench.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	ip netns del $NSA 2>/dev/null || true
	ip netns del $NSB 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add $NSA
ip netns add $NSB
ip link add rxfb-va netns $NSA type veth peer name rxfb-vb netns $NSB
ip -n $NSA addr add $IPA/24 dev rxfb-va
ip -n $NSB addr add $IPB/24 dev rxfb-vb
for ns in $NSA $NSB; do ip -n $ns link set lo up; done
ip -n $NSA link set rxfb-va up
ip -n $NSB link set rxfb-vb up

go build -o "$WORK/xferbench" ./fallback/internal/xferbench
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/src"
cat "$WORK/src" >/dev/null # warm the page cache

echo "== iperf3 over the same veth (10 s each)"
ip netns exec $NSB iperf3 -s -p 5299 >/dev/null &
PIDS+=($!)
for i in $(seq 50); do ip netns exec $NSA bash -c "echo >/dev/tcp/$IPB/5299" 2>/dev/null && break; sleep 0.1; done
for flags in "" "-Z" "-P 2" "-Z -P 2" "-P 4"; do
	printf 'iperf3 %-8s ' "$flags"
	ip netns exec $NSA iperf3 -c $IPB -p 5299 -t 10 $flags | grep -E 'receiver' | tail -1
done

TOKEN=$(openssl rand -hex 16)
ip netns exec $NSB "$WORK/xferbench" recv -listen $IPB:$PORT -token "$TOKEN" -out "$WORK/dst" -size $((SIZE_MIB << 20)) >"$WORK/recv.log" 2>&1 &
PIDS+=($!)
for i in $(seq 50); do grep -q listening "$WORK/recv.log" && break; sleep 0.1; done

ROUNDS=${ROUNDS:-3} RUNS=${RUNS:-3}
echo "== xferbench, ${SIZE_MIB} MiB file, 8 MiB chunks, $ROUNDS interleaved rounds of $RUNS runs per setting"
for round in $(seq $ROUNDS); do
	for mode in sendfile readwrite; do
		for streams in 1 2 4; do
			ip netns exec $NSA "$WORK/xferbench" send -addr $IPB:$PORT -token "$TOKEN" -src "$WORK/src" \
				-mode $mode -streams $streams -runs $RUNS | grep -v '^run' | tee -a "$WORK/results"
		done
	done
done
echo "== median over all rounds (MB/s)"
for mode in sendfile readwrite; do
	for streams in 1 2 4; do
		printf '%-9s streams=%d ' $mode $streams
		grep "mode=$mode streams=$streams " "$WORK/results" | sed -E 's/.*median ([0-9]+) MB.*/\1/' | sort -n | awk '{a[NR]=$1} END {printf "median-of-medians %d MB/s (%.1f Gbit/s), rounds: ", a[int((NR+1)/2)], a[int((NR+1)/2)]*8/1000}'
		grep "mode=$mode streams=$streams " "$WORK/results" | sed -E 's/.*median ([0-9]+) MB.*/\1/' | tr '\n' ' '
		echo
	done
done
