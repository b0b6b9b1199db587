#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Check that every TCP-semantics case passes under libxway.so with a
# private xwayd, on the channel: the kernel TCP sockets carry ~no payload
# (XWAY_TEST_EXPECT=accel: TCP_INFO byte counters of the real sockets).
# Skips (77) while xwayd or the channel layer is not built.
set -u
cd "$(dirname "$0")/../../.."
. tests/integration/shim/lib.sh
XWAYD=$B/xwayd
[ -x "$TCPSEM" ] && [ -n "$LIB" ] || { echo "missing $TCPSEM or libxway.so (run make)"; exit 1; }
if [ ! -x "$XWAYD" ]; then
	echo "SKIP: $XWAYD is not built yet: accelerated half not run"; exit 77
fi
if nm -D "$LIB" | grep -qE '^ +w xway_chan_local_create'; then
	echo "SKIP: libxway.so has no channel layer linked (shim/chan not landed)"; exit 77
fi
tmp=$(mktemp -d /tmp/xway-accel.XXXXXX)
sock=$tmp/xwayd.sock
"$XWAYD" --foreground --socket "$sock" >"$tmp/xwayd.log" 2>&1 &
bpid=$!
cleanup() { kill "$bpid" 2>/dev/null; wait "$bpid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
for i in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { echo "xwayd did not come up:"; cat "$tmp/xwayd.log"; exit 1; }
export XWAY_TEST_MB=${XWAY_TEST_MB:-64}
echo "== shim with broker (accelerated)"
run_suite accel XWAY_TEST_EXPECT=accel "LD_PRELOAD=$(shim_preload)" \
	XWAY_BROKER_SOCK="$sock" ASAN_OPTIONS=detect_leaks=0
echo "shim accelerated: $passes passed, $fails failed"
[ $fails -eq 0 ] || { printf '  failed: %s\n' "${failed_list[@]}"; tail -20 "$tmp/xwayd.log"; exit 1; }
