# SPDX-License-Identifier: MIT
# xwayctl: the broker's command-line viewer (libc only).
XWAYCTL_SRCS := tools/xwayctl/xwayctl.c tools/xwayctl/ipc.c \
                tools/xwayctl/status.c tools/xwayctl/peers.c \
                tools/xwayctl/listeners.c tools/xwayctl/connections.c \
                tools/xwayctl/stats.c
XWAYCTL_OBJS := $(XWAYCTL_SRCS:%.c=$(B)/%.o)

$(B)/xwayctl: $(XWAYCTL_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^

ALL_BINS += $(B)/xwayctl
INSTALL_BIN += $(B)/xwayctl
