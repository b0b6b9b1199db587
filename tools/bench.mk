# SPDX-License-Identifier: MIT
# Benchmarks (tools/bench/): xway-chanbench (channel vs socketpair),
# xway-tcpbench (plain sockets: run it plain and under the shim) and
# xway-vchan-test (the Xen backend between two domUs, for the test bed).
# `make bench` runs tools/bench/run-bench.sh.
$(B)/xway-chanbench: $(B)/tools/bench/chanbench.o $(CHAN_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^ $(CHAN_LIBS)

$(B)/xway-vchan-test: $(B)/tools/bench/vchan-test.o $(CHAN_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^ $(CHAN_LIBS)

$(B)/xway-tcpbench: $(B)/tools/bench/tcpbench.o
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^

BENCH_BINS += $(B)/xway-chanbench $(B)/xway-tcpbench $(B)/xway-vchan-test
ALL_BINS += $(B)/xway-chanbench $(B)/xway-tcpbench $(B)/xway-vchan-test

bench: build-all
	$(Q)B=$(B) tools/bench/run-bench.sh
