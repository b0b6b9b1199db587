#!/bin/bash
# SPDX-License-Identifier: MIT
# Push the number of concurrent cross-domain connections (SCALE_PUSH, 1000)
# and show where the first wall is: 70-xway-xen-scale.sh in "push" mode.
exec bash "$(dirname "$0")/70-xway-xen-scale.sh" "$1" push
