#!/bin/bash
# SPDX-License-Identifier: MIT
# Push the number of concurrent cross-domain connections (SCALE_PUSH, 1000)
# and show where the first wall is: 70-xway-xen-scale.sh in "push" mode.
# From the full set (run.sh stages every workload in /opt/xway-testbed/all,
# so XEN_TESTBED_ONLY=72 works alone).
d=/opt/xway-testbed/all
[ -f "$d/70-xway-xen-scale.sh" ] || d=$(dirname "$0")
exec bash "$d/70-xway-xen-scale.sh" "$1" push
