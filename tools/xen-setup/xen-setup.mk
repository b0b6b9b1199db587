# SPDX-License-Identifier: MIT
# xway-xen-setup: dom0 tool preparing /local/xway in xenstore (a script),
# and its dom0 service (`xway-xen-setup watch`).
INSTALL_SBIN += tools/xen-setup/xway-xen-setup

$(B)/xway-xen-setup.service: tools/xen-setup/xway-xen-setup.service.in
	@mkdir -p $(dir $@)
	$(Q)sed 's|@SBINDIR@|$(SBINDIR)|g' $< > $@

ALL_BINS += $(B)/xway-xen-setup.service
define INSTALL_EXTRA +=
sed 's|@SBINDIR@|$(SBINDIR)|g' tools/xen-setup/xway-xen-setup.service.in > $(DESTDIR)$(UNITDIR)/xway-xen-setup.service

endef
