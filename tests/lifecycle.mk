# SPDX-License-Identifier: MIT
# Readiness and process-lifecycle tests of the shim: the xway-lc helper
# (cases asserting kernel TCP behaviour) run plain, under the shim without
# a broker, and under the shim with a private xwayd (acceleration checked).
LCT := tests/integration/lifecycle

$(B)/tests/lifecycle/xway-lc: $(B)/$(LCT)/lc.o
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^ -lpthread

ALL_BINS += $(B)/tests/lifecycle/xway-lc
TEST_SCRIPTS += $(LCT)/run.sh
