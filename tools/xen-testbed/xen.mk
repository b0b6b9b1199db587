# SPDX-License-Identifier: MIT
# The Xen test bed: xtb-vchan (raw libxenvchan / TCP transfer and ping-pong
# probe, installed into the guests), its loopback self-test, and
# `make test-xen` (tools/xen-testbed/run.sh: Xen under QEMU, two PV domUs).

XTB_VCHAN := $(B)/xen-testbed/xtb-vchan
ALL_BINS += $(XTB_VCHAN)
TEST_SCRIPTS += tools/xen-testbed/selftest.sh

$(XTB_VCHAN): $(B)/tools/xen-testbed/xtb-vchan.o
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^ -lxenvchan

# xtb-conns: the many-connections probe of workloads 7x (plain sockets).
XTB_CONNS := $(B)/xen-testbed/xtb-conns
ALL_BINS += $(XTB_CONNS)

$(XTB_CONNS): $(B)/tools/xen-testbed/xtb-conns.o
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^

test-xen: build-all
	$(Q)B=$(B) tools/xen-testbed/run.sh --no-build
