# SPDX-License-Identifier: MIT
# The channel layer (shim/chan/): CHAN_OBJS are linked into libxway.so by the
# shim fragment, and into the chan tests and benchmark tools.  Built -fPIC
# and -fvisibility=hidden (nothing here is exported from libxway.so).
CHAN_SRCS := shim/chan/ring.c shim/chan/local.c shim/chan/io.c shim/chan/excl.c shim/chan/xen.c shim/chan/slab.c
CHAN_OBJS := $(patsubst %.c,$(B)/%.o,$(CHAN_SRCS))
CHAN_LIBS := -ldl -lpthread

$(CHAN_OBJS): OBJ_CFLAGS += -fPIC -fvisibility=hidden
