# SPDX-License-Identifier: MIT
# The shim's tests: a Criterion unit test of the configuration parser, the
# export-list check, the TCP-semantics integration scripts (plain /
# broker down / accelerated) driving the xway-tcpsem helper, and the
# adoption of listeners made elsewhere (adopt.sh, xway-adopt).
SHIMT := tests/integration/shim

$(B)/tests/shim/xway-tcpsem: $(B)/$(SHIMT)/tcpsem.o
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^ -lpthread

# config.c is pure (getenv/open): linked alone, no interposed symbol.
$(B)/tests/shim/test_shim_config: $(B)/$(SHIMT)/test_config.o $(B)/shim/config.o
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^ $(CRIT_LIBS)

$(B)/$(SHIMT)/test_config.o: OBJ_CFLAGS += $(CRIT_CFLAGS) -iquote shim

# srcport.c alone: the test gives it the real functions it calls.
$(B)/tests/shim/test_shim_srcport: $(B)/$(SHIMT)/test_srcport.o $(B)/shim/srcport.o
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^ $(CRIT_LIBS)

$(B)/$(SHIMT)/test_srcport.o: OBJ_CFLAGS += $(CRIT_CFLAGS) -iquote shim

$(B)/tests/shim/xway-adopt: $(B)/$(SHIMT)/adopt.o
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^

$(B)/tests/shim/xway-stdio-echo: $(B)/$(SHIMT)/stdio_echo.o
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^

$(B)/$(SHIMT)/stdio_echo_fortify.o: OBJ_CFLAGS += -O2 -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2
$(B)/tests/shim/xway-stdio-echo-fortify: $(B)/$(SHIMT)/stdio_echo_fortify.o
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^

ALL_BINS += $(B)/tests/shim/xway-tcpsem $(B)/tests/shim/xway-adopt $(B)/tests/shim/xway-stdio-echo \
            $(B)/tests/shim/xway-stdio-echo-fortify
TEST_BINS += $(B)/tests/shim/test_shim_config $(B)/tests/shim/test_shim_srcport
TEST_SCRIPTS += $(SHIMT)/exports.sh $(SHIMT)/xway-run.sh $(SHIMT)/plain.sh \
                $(SHIMT)/accel.sh $(SHIMT)/netns.sh $(SHIMT)/slow-broker.sh \
                $(SHIMT)/adopt.sh $(SHIMT)/stdio.sh
