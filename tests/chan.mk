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

# A stand-in libxenvchan for the Xen backend's data-path test (never
# installed); xen_test dlopens it by the absolute path compiled in here.
CHAN_FAKE_VCHAN := $(B)/tests/unit/chan/libfakexenvchan.so

$(CHAN_FAKE_VCHAN): tests/unit/chan/fake_xenvchan.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(XCFLAGS) -fPIC -shared -o $@ $<

$(B)/tests/unit/chan/xen_test.o: OBJ_CFLAGS += \
	-DXWAY_FAKE_XENVCHAN_PATH='"$(abspath $(CHAN_FAKE_VCHAN))"'
$(B)/tests/unit/chan/xen_test: | $(CHAN_FAKE_VCHAN)

TEST_BINS += $(CHAN_TEST_BINS)
