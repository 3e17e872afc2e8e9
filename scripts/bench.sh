#!/usr/bin/env bash
# make bench: every row of the benchmark table measured in one run
# (cmd/rxfer/benchtable_test.go TestBenchTable): rxfer across two network
# namespaces against iperf3 -Z, the destination file system, a 4 KiB
# read/write pair, rsync and scp; API and CLI latency; concurrency, RSS, fds
# and goroutines; mTLS, encryption, --verify mac and journal costs; directory
# trees (rxfer cp -r vs rsync and tar | nc, benchtable_tree_test.go). Prints the
# table and writes bench.txt, bench.json and bench.svg into $BENCH_OUT
# (default bin/bench). Needs root (network namespaces, tmpfs).
#   scripts/bench.sh [--quick] [path/to/rxfer]
# Exits 1 when a measurement fails, 3 when a row misses its target.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=full
if [ "${1:-}" = --quick ]; then
	mode=quick
	shift
fi
rxfer=$(realpath "${1:-bin/rxfer}")
if [ "$(id -u)" != 0 ]; then
	echo "bench: needs root (network namespaces, tmpfs mounts); run as root" >&2
	exit 1
fi
out=${BENCH_OUT:-bin/bench}
mkdir -p "$out"
out=$(realpath "$out")
rm -f "$out"/bench.txt "$out"/bench.json "$out"/bench.svg
echo "== rxfer bench ($mode): measuring every row in one run; log in $out/test.log"
if ! RXFER_BENCH_TABLE=1 RXFER_BENCH_MODE=$mode RXFER_BENCH_OUT=$out RXFER_BIN=$rxfer \
	go test -count=1 -timeout 90m -run '^TestBenchTable$' -v ./cmd/rxfer/ >"$out/test.log" 2>&1; then
	grep -E '^\s+\S+_test\.go:[0-9]+: ' "$out/test.log" | grep -v 'rxfer round' | tail -40 >&2 || true
	echo "bench: a measurement failed; see $out/test.log" >&2
	exit 1
fi
cat "$out/bench.txt"
echo "wrote $out/bench.txt, $out/bench.json, $out/bench.svg"
if grep -q '^[0-9]* rows, [1-9][0-9]* FAIL$' "$out/bench.txt"; then
	exit 3
fi
