#!/bin/bash
# SPDX-License-Identifier: MIT
# Entry point of the test bed in every guest, run once at boot by
# xway-testbed.service: the kernel command line's xway.role says whether
# this is dom0 (creates and watches the domUs) or a domU (runs workloads).
# Both power the machine off at the end unless xway.interactive=1.
set -u
. /opt/xway-testbed/guest/tblib.sh
TB_ROLE=$(cmdline xway.role || echo none)
export TB_ROLE
case "$TB_ROLE" in
dom0)          exec /opt/xway-testbed/guest/dom0.sh ;;
server|client) exec /opt/xway-testbed/guest/domu.sh ;;
*)             say "no xway.role on the kernel command line: nothing to do"; exit 0 ;;
esac
