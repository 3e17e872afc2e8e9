#!/usr/bin/env bash
# make demo: two rxfer daemons on loopback with temporary export roots, a
# generated 256 MiB file copied from one to the other with the CLI, verified.
set -euo pipefail
rxfer=$(realpath "${1:-bin/rxfer}")
size_mib=${DEMO_SIZE_MIB:-256}
work=$(mktemp -d -t rxfer-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
mkdir -p "$work/node-a" "$work/node-b"

# start NAME ROOT: starts a daemon on ephemeral ports (its metrics on one
# of its own), waits for its ready line and the metrics line after it, and
# sets $addr to its control address and $metrics to its /metrics URL. (Not
# run in a subshell, so $pids keeps the daemon for cleanup.)
start() {
	local name=$1 root=$2 fifo=$work/$1.ready line mline
	mkfifo "$fifo"
	"$rxfer" serve --root "$root" --listen 127.0.0.1:0 --data-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
		--node-id "$name" >"$fifo" 2>"$work/$name.log" &
	pids+=($!)
	{ read -r line && read -r mline; } <"$fifo" || { echo "demo: $name did not start:"; cat "$work/$name.log"; exit 1; }
	line=${line#*control=}
	addr=${line%% *}
	metrics=${mline#rxfer metrics=}
}

echo "demo: generating a ${size_mib} MiB file"
head -c $((size_mib << 20)) /dev/urandom >"$work/node-a/demo.bin"
start node-a "$work/node-a"
a=$addr a_metrics=$metrics
start node-b "$work/node-b"
b=$addr b_metrics=$metrics
echo "demo: node-a on $a, node-b on $b"
echo "demo: metrics: node-a $a_metrics, node-b $b_metrics"
echo "demo: rxfer cp $a:/demo.bin $b:/"
"$rxfer" cp "$a:/demo.bin" "$b:/"
cmp "$work/node-a/demo.bin" "$work/node-b/demo.bin"
echo "demo: verified: node-b's copy is byte-identical ($(sha256sum <"$work/node-b/demo.bin" | cut -c1-16)...)"
"$rxfer" status "$b"
echo "demo: node-b's transfer counters from $b_metrics:"
if command -v curl >/dev/null; then
	curl -fsS "$b_metrics" | grep -E '^rxfer_(transfer_bytes_total|transfers_finished_total)\{.*\} [1-9]' || true
fi
