# SPDX-License-Identifier: MIT
# libxway.so: the LD_PRELOAD shim.  Objects are position independent with
# hidden visibility; only the symbols in shim/libxway.map are exported.
SHIM_SRCS := shim/real.c shim/config.c shim/log.c shim/fdtable.c \
             shim/broker_link.c shim/setup.c shim/io.c shim/sockcall.c \
             shim/signal.c shim/rlimit.c shim/srcport.c
SHIM_OBJS := $(SHIM_SRCS:%.c=$(B)/%.o)
SHIM_LC_SRCS := shim/poll.c shim/epoll.c shim/lifecycle.c shim/scm.c shim/stdio.c \
                shim/target.c
# Everything but the interposed entry points: for unit tests that link the
# internals into an ordinary program.
SHIM_CORE_OBJS := $(filter-out $(B)/shim/sockcall.o,$(SHIM_OBJS))
# Readiness and process lifecycle (poll, epoll, fork/exec/close_range,
# SCM_RIGHTS): interposed entry points too, so not in SHIM_CORE_OBJS.
SHIM_OBJS += $(patsubst %.c,$(B)/%.o,$(SHIM_LC_SRCS))

$(SHIM_OBJS): OBJ_CFLAGS += -fPIC -fvisibility=hidden

$(B)/libxway.so: $(SHIM_OBJS) $(CHAN_OBJS) shim/libxway.map
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(XLDFLAGS) -shared -fPIC -Wl,-z,defs -Wl,-soname,libxway.so \
		-Wl,--version-script=shim/libxway.map -o $@ \
		$(SHIM_OBJS) $(CHAN_OBJS) -ldl -lpthread

ALL_BINS += $(B)/libxway.so
INSTALL_LIB += $(B)/libxway.so
