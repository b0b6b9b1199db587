# SPDX-License-Identifier: MIT
# xway-xen-setup: dom0 tool preparing /local/xway in xenstore (a script).
INSTALL_SBIN += tools/xen-setup/xway-xen-setup
