#!/usr/bin/env bash
# make bench: rxfer over zero-copy TCP between two network namespaces joined
# by a veth, next to iperf3 (plain and -Z) on the same link in the same run.
# Prints the ratios, and a BENCH line of JSON for machines. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
	echo "bench: needs root (network namespaces); run as root" >&2
	exit 1
fi
RXFER_NETNS_BENCH=1 RXFER_BIN=$(realpath "${1:-bin/rxfer}") \
	go test -count=1 -run 'TestNetnsBench$' -v ./cmd/rxfer/ | grep -E 'iperf3|rxfer|BENCH|ok|FAIL'
