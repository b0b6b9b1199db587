# SPDX-License-Identifier: MIT
# Channel-layer tests (tests/unit/chan/): Criterion programs linked with the
# channel objects directly (no shim, no LD_PRELOAD).
CHAN_TESTS := ring local xen stress slab
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

# A stand-in libxenevtchn (soname libxenevtchn.so.1) under the real
# libxenvchan, for the ends built from descriptors (xen_test fd_ends_*).
CHAN_FAKE_EVTCHN := $(B)/tests/unit/chan/fakeevtchn/libxenevtchn.so.1

$(CHAN_FAKE_EVTCHN): tests/unit/chan/fake_xenevtchn.c tests/unit/chan/fake_xenevtchn.map
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(XCFLAGS) -fPIC -shared -Wl,-soname,libxenevtchn.so.1 \
		-Wl,--version-script,tests/unit/chan/fake_xenevtchn.map -o $@ $<

$(B)/tests/unit/chan/xen_test.o: OBJ_CFLAGS += \
	-DXWAY_FAKE_XENVCHAN_PATH='"$(abspath $(CHAN_FAKE_VCHAN))"' \
	-DXWAY_FAKE_XENEVTCHN_PATH='"$(abspath $(CHAN_FAKE_EVTCHN))"'
$(B)/tests/unit/chan/xen_test: | $(CHAN_FAKE_VCHAN) $(CHAN_FAKE_EVTCHN)

TEST_BINS += $(CHAN_TEST_BINS)
