# testbed.mk — the rdma_rxe VM testbed, as a Makefile fragment for the
# top-level Makefile (`include testbed/testbed.mk`). See testbed/README.md.
#
# Targets:
#   testbed          run the RDMA suite: deps, guest, test binaries, one-VM then two-VM suite
#   testbed-check    fail with a reason (and the host-only alternative) if the testbed cannot run
#   testbed-deps     apt-get install the Debian packages the testbed needs, when missing (root)
#   testbed-guest    build or reuse the cached guest (kernel + initramfs)
#   testbed-bins     build the runner and `go test -c` binaries of TESTBED_PKGS
#   testbed-1vm      run the one-VM suite (ib_write_bw self-check, then every TESTBED_PKGS binary)
#   testbed-2vm      run the two-VM suite (self-check across the link, then TESTBED_2VM_RUN tests)
#   testbed-shell    interactive shell in a guest with rxe0 up (quit: Ctrl-A X)
#   testbed-clean    remove the cached guests and binaries
#
# The top-level Makefile provides test-host (named in testbed-check's message).
# To fail before the host suite on a host that cannot run the testbed:
#   test: testbed-check test-host testbed

# Packages whose test binaries run in the VMs (built with `go test -c`).
TESTBED_PKGS ?= ./verbs/
# Flags for every test binary in the VMs.
TESTBED_TESTFLAGS ?= -test.v -test.timeout=10m
# -test.run pattern of the tests that need two VMs (they skip with one VM;
# the one-VM suite skips them).
TESTBED_2VM_RUN ?= TwoVM
# Flags for the runner (e.g. -m 2048 -smp 2); TESTBED_TIMEOUT bounds each boot+suite
# with room for a loaded host (suite times: testbed/README.md).
TESTBED_TIMEOUT ?= 30m
TESTBED_RUNFLAGS ?=
# The host-only target named in the "cannot run" message.
TESTBED_HOST_TARGET ?= test-host
TESTBED_GO ?= go
# The dependency step: checks packages and, as root, apt-get installs the missing ones.
TESTBED_DEPS ?= scripts/deps.sh

TESTBED_DIR := testbed
TESTBED_CACHE := $(TESTBED_DIR)/.cache
TESTBED_BIN := $(TESTBED_CACHE)/bin
TESTBED_RUNNER := $(TESTBED_BIN)/rxfer-testbed
TESTBED_APT := qemu-system-x86 busybox-static cpio kmod rdma-core ibverbs-providers \
	ibverbs-utils perftest libibverbs-dev iproute2
# One binary per package: ./verbs/ -> verbs.test, ./rdma/x -> rdma_x.test
testbed_bin = $(TESTBED_BIN)/$(subst /,_,$(patsubst ./%,%,$(patsubst %/,%,$(1)))).test
TESTBED_BINS = $(foreach p,$(TESTBED_PKGS),$(call testbed_bin,$(p)))
TESTBED_RUN = $(TESTBED_RUNNER) -testbed $(TESTBED_DIR) -timeout $(TESTBED_TIMEOUT) $(TESTBED_RUNFLAGS)

.PHONY: testbed testbed-check testbed-deps testbed-guest testbed-bins testbed-1vm \
	testbed-2vm testbed-shell testbed-clean

testbed: testbed-2vm

testbed-check:
	@$(TESTBED_DIR)/check.sh $(TESTBED_HOST_TARGET)

testbed-deps: testbed-check
	@$(TESTBED_DEPS) testbed $(TESTBED_APT)

testbed-guest: testbed-deps
	@$(TESTBED_DIR)/guest/build.sh $(TESTBED_CACHE) >/dev/null

testbed-bins: testbed-deps
	@mkdir -p $(TESTBED_BIN)
	$(TESTBED_GO) build -o $(TESTBED_RUNNER) ./$(TESTBED_DIR)/cmd/rxfer-testbed
	$(foreach p,$(TESTBED_PKGS),$(TESTBED_GO) test -c -o $(call testbed_bin,$(p)) $(p) &&) true

# Each binary runs from its package directory (testdata/ works).
testbed_cmd = set -e; $(foreach p,$(TESTBED_PKGS),(cd $(p) && $(abspath $(call testbed_bin,$(p))) $(TESTBED_TESTFLAGS) $(1));)

testbed-1vm: testbed-guest testbed-bins
	@echo "testbed: one VM: $(TESTBED_PKGS)"
	@start=$$(date +%s); $(TESTBED_RUN) -vms 1 -selfcheck run -- sh -c '$(call testbed_cmd,-test.skip=$(TESTBED_2VM_RUN))' && \
		echo "testbed: one-VM suite passed in $$(( $$(date +%s) - start ))s"

testbed-2vm: testbed-1vm
	@echo "testbed: two VMs: $(TESTBED_PKGS) -test.run=$(TESTBED_2VM_RUN)"
	@start=$$(date +%s); $(TESTBED_RUN) -vms 2 -selfcheck run -- sh -c '$(call testbed_cmd,-test.run=$(TESTBED_2VM_RUN))' && \
		echo "testbed: two-VM suite passed in $$(( $$(date +%s) - start ))s"

testbed-shell: testbed-guest testbed-bins
	$(TESTBED_RUN) shell

testbed-clean:
	rm -rf $(TESTBED_CACHE)/guest-* $(TESTBED_CACHE)/run-* $(TESTBED_BIN)
