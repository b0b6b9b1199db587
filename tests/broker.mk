# SPDX-License-Identifier: MIT
# Broker tests: Criterion programs (pure parser, a live xwayd, daemon
# start-up/config/notify) and integration scripts.  The fuzz target is built
# by its own script with clang (tests/fuzz/run.sh).
TB_HELPER_OBJ := $(B)/tests/unit/broker/helper.o

$(B)/tests/unit/broker/test_proto: $(B)/tests/unit/broker/test_proto.o $(BROKER_PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^ $(CRIT_LIBS)

$(B)/tests/unit/broker/test_broker: $(B)/tests/unit/broker/test_broker.o $(TB_HELPER_OBJ) $(B)/xwayd
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $(filter %.o,$^) $(CRIT_LIBS) -lpthread

$(B)/tests/unit/broker/test_daemon: $(B)/tests/unit/broker/test_daemon.o $(TB_HELPER_OBJ) $(B)/xwayd
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $(filter %.o,$^) $(CRIT_LIBS)

$(B)/tests/unit/broker/test_timer: $(B)/tests/unit/broker/test_timer.o $(B)/broker/timer.o \
		$(B)/broker/loop.o $(B)/broker/log.o
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^ $(CRIT_LIBS) $(GLIB_LIBS)

$(B)/tests/unit/broker/test_timer.o: OBJ_CFLAGS += $(GLIB_CFLAGS)

$(B)/tests/unit/broker/%.o: OBJ_CFLAGS += $(CRIT_CFLAGS)

$(B)/tests/integration/broker/xway_proto_client: $(B)/tests/integration/broker/xway_proto_client.o $(TB_HELPER_OBJ)
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^

TEST_BINS += $(B)/tests/unit/broker/test_proto
TEST_BINS += $(B)/tests/unit/broker/test_broker
TEST_BINS += $(B)/tests/unit/broker/test_daemon
TEST_BINS += $(B)/tests/unit/broker/test_timer
ALL_BINS += $(B)/tests/integration/broker/xway_proto_client
TEST_SCRIPTS += tests/integration/broker/offer_claim.sh
TEST_SCRIPTS += tests/integration/broker/systemd_unit.sh
TEST_SCRIPTS += tests/integration/broker/restart.sh tests/integration/broker/liveness.sh
TEST_SCRIPTS += tests/fuzz/run.sh

# A stand-in libxenstore for the Xen-mode test (never installed).
$(B)/tests/unit/broker/fakexs/libxenstore.so.4: tests/unit/broker/fake_xenstore.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XCFLAGS) -fPIC -shared -o $@ $< $(XLDFLAGS)

# ... and a stand-in libxenvchan for the broker links (same directory).
$(B)/tests/unit/broker/fakexs/libxenvchan.so.4.17: tests/unit/broker/fake_xenvchan_link.c
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XCFLAGS) -fPIC -shared -o $@ $< $(XLDFLAGS)

$(B)/tests/unit/broker/test_xen: $(B)/tests/unit/broker/test_xen.o $(TB_HELPER_OBJ) $(B)/xwayd \
		$(B)/tests/unit/broker/fakexs/libxenstore.so.4 \
		$(B)/tests/unit/broker/fakexs/libxenvchan.so.4.17
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $(filter %.o,$^) $(CRIT_LIBS)

TEST_BINS += $(B)/tests/unit/broker/test_xen
TEST_SCRIPTS += tests/integration/broker/xen_setup.sh
