# SPDX-License-Identifier: MIT
# xwayd (the broker daemon, glib) and its systemd unit.  broker/proto.c is
# pure C (no glib) so tests and the fuzz harness can link or include it.
BROKER_SRCS := broker/xwayd.c broker/config.c broker/dir.c broker/conn.c \
               broker/query.c broker/sock.c broker/log.c broker/notify.c \
               broker/xen.c broker/xenlink.c broker/xenvchan.c broker/vchanpool.c broker/diag.c broker/persist.c broker/timer.c broker/loop.c \
               broker/proto.c
BROKER_OBJS := $(BROKER_SRCS:%.c=$(B)/%.o)
BROKER_PROTO_OBJ := $(B)/broker/proto.o

$(filter-out $(BROKER_PROTO_OBJ),$(BROKER_OBJS)): OBJ_CFLAGS += $(GLIB_CFLAGS)

$(B)/xwayd: $(BROKER_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(XLDFLAGS) -o $@ $^ $(GLIB_LIBS) -ldl

$(B)/xwayd.service: broker/xwayd.service.in
	@mkdir -p $(dir $@)
	$(Q)sed 's|@SBINDIR@|$(SBINDIR)|g' $< > $@

ALL_BINS += $(B)/xwayd $(B)/xwayd.service
INSTALL_SBIN += $(B)/xwayd
define INSTALL_EXTRA +=
sed 's|@SBINDIR@|$(SBINDIR)|g' broker/xwayd.service.in > $(DESTDIR)$(UNITDIR)/xwayd.service
	[ -e $(DESTDIR)$(SYSCONFDIR)/xway/xwayd.conf ] || install -m 0644 broker/xwayd.conf $(DESTDIR)$(SYSCONFDIR)/xway/xwayd.conf

endef
