#!/bin/bash
# SPDX-License-Identifier: MIT
# Step 2 of the cross-domain work: a client without the shim
# (XWAY_DISABLE=1) in the client domU talks to a shimmed server in the
# server domU (xwayd in Xen mode in both).  The connection stays plain TCP,
# the transfer is verified, and the server's broker records the fallback
# with reason no-offer.  Same script as 50-xway-xen, mode "plain"; the NIC
# counters of this workload must see the transfer (report.py).
d=/opt/xway-testbed/all          # every workload (run.sh), so ONLY=55 works alone
[ -f "$d/50-xway-xen.sh" ] || d=$(dirname "$0")
exec bash "$d/50-xway-xen.sh" "$1" plain
