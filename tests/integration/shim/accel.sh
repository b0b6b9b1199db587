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
pre=$(shim_preload)
echo "== shim with broker (accelerated)"
run_suite accel XWAY_TEST_EXPECT=accel "LD_PRELOAD=$pre" \
	XWAY_BROKER_SOCK="$sock" ASAN_OPTIONS=detect_leaks=0
# The broker's view: accelerated records with channel bytes, and the
# kernel TCP counters the shims reported at close ~0.
if [ -x "$B/xwayctl" ]; then
	"$B/xwayctl" connections --json --socket "$sock" >"$tmp/conns.json" 2>&1 ||
		{ echo "xwayctl failed:"; cat "$tmp/conns.json"; fails=$((fails + 1)); failed_list+=(xwayctl); }
	python3 - "$tmp/conns.json" <<'PY' || { fails=$((fails + 1)); failed_list+=(xwayctl-json); }
import json, sys
d = json.load(open(sys.argv[1]))["connections"]
acc = [c for c in d if c["state"] in ("accelerated", "closed") and c["backend"] == "local"]
big = [c for c in acc if c["bytes_c2s"] + c["bytes_s2c"] >= 1 << 20]
assert big, "no accelerated connection with >= 1 MiB in xwayctl: %s" % d[:3]
for c in big:
    for side in ("client", "server"):
        for k in ("tcp_bytes_sent", "tcp_bytes_received"):
            v = c[side][k]
            assert v is None or v < 4096, "%s %s %s = %s" % (c["id"], side, k, v)
print("xwayctl: %d accelerated connections, %d with >= 1 MiB on the channel, "
      "kernel TCP payload ~0" % (len(acc), len(big)))
PY
	# Early offers (docs/DESIGN.md §2.2): processes that connect to the
	# same listener again connect while the broker reads their offer;
	# every one of those offers must have been decided like the others.
	"$B/xwayctl" stats --json --socket "$sock" >"$tmp/stats.json" 2>&1
	python3 - "$tmp/stats.json" <<'PY' || { fails=$((fails + 1)); failed_list+=(early-offers); }
import json, sys
s = json.load(open(sys.argv[1]))
assert s["offers_connecting"] > 0, "no early offer in the whole suite: %s" % s
print("xwayctl stats: %d offers, %d of them early (connecting), %d claims, %d matched "
      "after reading connecting links, %d claim misses"
      % (s["offers"], s["offers_connecting"], s["claims"], s["claims_read_first"],
         s["claim_misses"]))
PY
fi
# A daemon's start process listens, forks and exits; its child serves:
# the child registers the inherited listener itself.
echo "== daemonized server"
SERVER_ENV=(XWAY_TEST_DAEMONIZE=1)
SUITE_CASES="echo bulk" run_suite daemon XWAY_TEST_EXPECT=accel "LD_PRELOAD=$pre" \
	XWAY_BROKER_SOCK="$sock" ASAN_OPTIONS=detect_leaks=0
SERVER_ENV=()
# What an accelerated connection answered the application is in the debug
# log (io.c xway_io_note): the rst case's reset, the eof case's EOF, each
# once per direction, never "try again".
echo "== debug log of the answers"
: > "$tmp/note.log"
SUITE_FAMILIES=4 SUITE_CASES="eof rst" run_suite note XWAY_TEST_EXPECT=accel "LD_PRELOAD=$pre" \
	XWAY_BROKER_SOCK="$sock" ASAN_OPTIONS=detect_leaks=0 XWAY_LOG_LEVEL=debug \
	XWAY_LOG_FILE="$tmp/note.log"
for want in "recv: EOF returned to the application" \
	    "recv: Connection reset by peer returned to the application"; do
	grep -q "$want.*backend local" "$tmp/note.log" ||
		{ echo "  FAIL note: no '$want' line"; fails=$((fails + 1)); failed_list+=(note-log); }
done
if grep -q "Resource temporarily unavailable returned" "$tmp/note.log"; then
	echo "  FAIL note: EAGAIN logged"; fails=$((fails + 1)); failed_list+=(note-eagain)
fi
# One end shimmed, the other plain: both must agree on TCP (the server's
# claim finds no offer; the client's offer is withdrawn).
echo "== only the server shimmed"
SERVER_ENV=("LD_PRELOAD=$pre" XWAY_BROKER_SOCK="$sock" ASAN_OPTIONS=detect_leaks=0); CLIENT_ENV=()
run_suite srv-only XWAY_TEST_EXPECT=tcp
echo "== only the client shimmed"
SERVER_ENV=(); CLIENT_ENV=("LD_PRELOAD=$pre" XWAY_BROKER_SOCK="$sock" ASAN_OPTIONS=detect_leaks=0)
run_suite cli-only XWAY_TEST_EXPECT=tcp
echo "shim accelerated: $passes passed, $fails failed"
[ $fails -eq 0 ] || { printf '  failed: %s\n' "${failed_list[@]}"; tail -20 "$tmp/xwayd.log"; exit 1; }
