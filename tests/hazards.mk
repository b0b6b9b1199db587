# SPDX-License-Identifier: MIT
# The HAZARDS audit's own cases (docs/HAZARDS.md): the xway-hz helper run
# plain, under the shim without a broker, and accelerated with a private
# xwayd, plus the installed library's permissions.
HZT := tests/integration/hazards

$(B)/tests/hazards/xway-hz: $(B)/$(HZT)/hz.o
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^ -lpthread

ALL_BINS += $(B)/tests/hazards/xway-hz
TEST_SCRIPTS += $(HZT)/run.sh
