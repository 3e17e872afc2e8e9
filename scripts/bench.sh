#!/usr/bin/env bash
# make bench: (1) rxfer bench: rxfer vs a plain read/write copy over loopback
# TCP in the same run; (2) rxfer over zero-copy TCP between two network
# namespaces joined by a veth, next to iperf3 (plain and -Z) on the same link
# in the same run. Prints the ratios, and JSON lines for machines. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
rxfer=$(realpath "${1:-bin/rxfer}")
echo "== rxfer bench: rxfer vs a read/write copy over loopback TCP (1 GiB, same disk, both fsync)"
"$rxfer" bench --dir "${BENCH_DIR:-/var/tmp}"
if [ "$(id -u)" != 0 ]; then
	echo "bench: needs root (network namespaces); run as root" >&2
	exit 1
fi
echo "== rxfer vs iperf3 across two network namespaces (veth)"
RXFER_NETNS_BENCH=1 RXFER_BIN=$rxfer \
	go test -count=1 -run 'TestNetnsBench$' -v ./cmd/rxfer/ | grep -E 'iperf3|rxfer|BENCH|ok|FAIL'
