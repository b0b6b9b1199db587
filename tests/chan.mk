# SPDX-License-Identifier: MIT
# Channel-layer tests (tests/unit/chan/): Criterion programs linked with the
# channel objects directly (no shim, no LD_PRELOAD).
CHAN_TESTS := ring local xen stress
CHAN_TEST_BINS := $(CHAN_TESTS:%=$(B)/tests/unit/chan/%_test)

$(B)/tests/unit/chan/%_test: $(B)/tests/unit/chan/%_test.o $(CHAN_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^ $(CRIT_LIBS) $(CHAN_LIBS)

$(CHAN_TEST_BINS:%=%.o): OBJ_CFLAGS += $(CRIT_CFLAGS)

TEST_BINS += $(CHAN_TEST_BINS)
