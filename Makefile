# rxfer — see README.md. Two commands set everything up on a fresh Debian machine:
#   make demo    build, start two daemons on loopback, copy 256 MiB, verify, clean up
#   make test    host suite (unit, end-to-end, network namespaces) + the rdma_rxe VM testbed

GO      ?= go
BIN     := bin/rxfer
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
# Debian packages, by what needs them (the testbed's own list is TESTBED_APT in
# testbed/testbed.mk). scripts/deps.sh checks them and, as root, installs the
# missing ones before anything compiles.
BUILD_APT := gcc libc6-dev libibverbs-dev
HOST_APT  := iproute2 tcpdump systemd
BENCH_APT := $(HOST_APT) iperf3 rsync openssh-server openssh-client netcat-openbsd
DEPS      := scripts/deps.sh

.PHONY: all build build-nocgo demo test test-host deps deps-build deps-test deps-bench vet proto bench bench-rdma clean fuzz

all: build

# demo's own run says "deps (demo)" (target-specific variables reach prerequisites).
deps-build:
	@$(DEPS) $(or $(DEPS_TARGET),build) $(BUILD_APT)

# What `make test` needs, host suite and testbed together: one apt-get run.
deps-test:
	@$(DEPS) test $(BUILD_APT) $(HOST_APT) $(TESTBED_APT)

deps-bench:
	@$(DEPS) bench $(BUILD_APT) $(BENCH_APT) $(TESTBED_APT)

deps: deps-test

# cgo only where the libibverbs headers and a C compiler are there; otherwise
# the TCP-only binary (deps.sh has said why).
build: deps-build
	@if [ -f /usr/include/infiniband/verbs.h ] && command -v gcc >/dev/null; then $(GO) build -o $(BIN) ./cmd/rxfer; \
	else echo "build: TCP-only binary (CGO_ENABLED=0)"; CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/rxfer; fi

# The TCP-only binary: no cgo, no libibverbs.
build-nocgo:
	CGO_ENABLED=0 $(GO) build -o bin/rxfer-nocgo ./cmd/rxfer

demo: DEPS_TARGET := demo
demo: build
	@scripts/demo.sh $(BIN)

# deps-test first: a missing package fails here, before anything compiles.
test: deps-test testbed-check test-host testbed

deps-host:
	@$(DEPS) test-host $(BUILD_APT) $(HOST_APT)

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...

test-host: deps-host vet build-nocgo
	$(GO) test -count=1 -timeout 15m ./...

# Every Fuzz* target in the module for FUZZTIME each, stopping at the first
# failure (`go test ./...` runs their seed corpora). `go test -list` finds the
# targets, so new ones are fuzzed without editing this file.
FUZZTIME ?= 30s
fuzz: deps-host
	@list=$$($(GO) test -list '^Fuzz' ./...) || { echo "$$list"; exit 1; }; \
	targets=$$(echo "$$list" | awk '/^Fuzz/ { names = names " " $$1 } \
		/^ok / { n = split(names, a, " "); for (i = 1; i <= n; i++) print $$2 "," a[i]; names = "" }'); \
	[ -n "$$targets" ] || { echo "fuzz: no Fuzz targets found"; exit 1; }; \
	for t in $$targets; do pkg=$${t%,*}; name=$${t#*,}; \
		echo "== fuzz $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg || { echo "fuzz: $$name ($$pkg) FAILED"; exit 1; }; \
	done; \
	echo "fuzz: $$(echo $$targets | wc -w) targets, $(FUZZTIME) each, no failure"

# The host benchmark table (scripts/bench.sh, cmd/rxfer/benchtable_test.go):
# one run measures every row, prints the table and writes bench.txt,
# bench.json and bench.svg into $(BENCH_OUT). QUICK=1: quarter sizes, one
# round. Host-only: the RDMA rows are bench-rdma's (the VM testbed).
BENCH_OUT ?= bin/bench
bench: deps-bench build
	@BENCH_OUT=$(BENCH_OUT) scripts/bench.sh $(if $(QUICK),--quick) $(BIN)

# The RDMA benchmark in the testbed (cmd/rxfer/rdma_bench_test.go): ib_write_bw
# and rxfer region→region and file→file on the same rxe device, one VM, then two.
# BENCH_RDMA_ENV adds guest variables, e.g. "-e RXFER_RDMA_BENCH_MIB=64".
BENCH_RDMA_ENV ?=
BENCH_RDMA_RUN = $(TESTBED_RUN) -m 4096 -e RXFER_RDMA_BENCH=1 $(BENCH_RDMA_ENV) -C $(CURDIR)/cmd/rxfer
bench-rdma: SHELL := /bin/bash
bench-rdma: .SHELLFLAGS := -o pipefail -c
bench-rdma: build testbed-guest
	@$(MAKE) --no-print-directory testbed-bins TESTBED_PKGS=./cmd/rxfer/
	@echo "== RDMA: ib_write_bw vs rxfer, two daemons on one rxe device (one VM)"
	@$(BENCH_RDMA_RUN) -vms 1 run -- $(abspath $(call testbed_bin,./cmd/rxfer/)) -test.v -test.run '^TestRDMABench$$' | \
		grep -E 'ib_write_bw|region|file|BENCH|^--- |^ok|FAIL|panic'
	@echo "== RDMA: ib_write_bw vs rxfer across two VMs (vm1 pulls from vm0)"
	@$(BENCH_RDMA_RUN) -vms 2 run -- $(abspath $(call testbed_bin,./cmd/rxfer/)) -test.v -test.run '^TestRDMABenchTwoVM$$' | \
		grep -E 'ib_write_bw|region|file|BENCH|^--- |^ok|FAIL|panic'

# Regenerates api/rxferv1 from api/rxfer/v1/rxfer.proto (protoc from Debian's protobuf-compiler).
proto:
	@command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(CURDIR)/bin:$$PATH protoc -I api --go_out=api --go_opt=module=github.com/rxfer/rxfer/api \
		--go-grpc_out=api --go-grpc_opt=module=github.com/rxfer/rxfer/api rxfer/v1/rxfer.proto

clean: testbed-clean
	rm -rf bin

# The RDMA suite: these packages' test binaries run in the rdma_rxe VMs;
# cmd/rxfer's end-to-end tests there start the host-built rxfer binary.
TESTBED_PKGS := ./verbs/ ./rdma/ ./transfer/ ./cmd/rxfer/
TESTBED_RUNFLAGS := -e RXFER_BIN=$(abspath $(BIN))

include testbed/testbed.mk

testbed-bins: build
