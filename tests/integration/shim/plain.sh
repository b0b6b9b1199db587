#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Check that every TCP-semantics case passes on plain kernel TCP, and
# under libxway.so with the broker down (the shim must fall back to TCP and
# the app notice nothing).  Both runs also assert that the kernel carried
# the payload (XWAY_TEST_EXPECT=tcp).
set -u
cd "$(dirname "$0")/../../.."
. tests/integration/shim/lib.sh
[ -x "$TCPSEM" ] || { echo "missing $TCPSEM (run make)"; exit 1; }
[ -n "$LIB" ] || { echo "missing $B/libxway.so (run make)"; exit 1; }
export XWAY_TEST_MB=${XWAY_TEST_MB:-64}
echo "== plain kernel TCP"
run_suite plain XWAY_TEST_EXPECT=tcp
echo "== shim, broker down"
run_suite broker-down XWAY_TEST_EXPECT=tcp "LD_PRELOAD=$(shim_preload)" \
	XWAY_BROKER_SOCK=/nonexistent/xwayd.sock ASAN_OPTIONS=detect_leaks=0
echo "shim plain/broker-down: $passes passed, $fails failed"
[ $fails -eq 0 ] || { printf '  failed: %s\n' "${failed_list[@]}"; exit 1; }
