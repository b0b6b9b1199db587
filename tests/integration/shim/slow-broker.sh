#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Check that a broker that stalls (SIGSTOP for 1 s, and for 3.5 s) while a server claims a
# connection does not break it: the server waits for the broker's decision
# instead of falling back to TCP alone while the client was told "claimed"
# (that left the client waiting on a ring nobody reads).  Whatever the
# timing on a loaded machine, both ends must agree and the echo must come
# back; the bound is generous.
set -u
cd "$(dirname "$0")/../../.."
. tests/integration/shim/lib.sh
XWAYD=$B/xwayd
[ -x "$XWAYD" ] || { echo "SKIP: $XWAYD not built"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: no python3"; exit 77; }
tmp=$(mktemp -d /tmp/xway-slow.XXXXXX)
sock=$tmp/xwayd.sock
"$XWAYD" --foreground --socket "$sock" >"$tmp/xwayd.log" 2>&1 &
bpid=$!; spid=""; kpid=""
cleanup() {
	kill -CONT "$bpid" 2>/dev/null
	[ -n "$kpid" ] && kill "$kpid" 2>/dev/null
	[ -n "$spid" ] && kill "$spid" 2>/dev/null
	kill "$bpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"
}
trap cleanup EXIT
for i in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
pre=$(shim_preload)
py=$(command -v /usr/bin/python3 || command -v python3)
export ASAN_OPTIONS=detect_leaks=0 XWAY_BROKER_SOCK=$sock
# scenario claim: the client connects (its offer is pending), the broker
# is stopped, the server accepts (its CLAIM waits on the stopped broker),
# 1 s later the broker continues.  scenario offer: the broker is stopped
# before the client connects (its OFFER waits), continues 1 s later, then
# the server accepts.  Ordered by files, not by sleeps.
scenario() {
	local mode=$1 stall=${2:-1}
	rm -f "$tmp/go" "$tmp/port" "$tmp/client"
	LD_PRELOAD="$pre" timeout 60 "$py" -c '
import socket, os, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
for i in range(3000):
    if os.path.exists(sys.argv[1]): break
    time.sleep(0.01)
c, _ = s.accept(); d = c.recv(100); c.sendall(d * 2); c.close()
' "$tmp/go" >"$tmp/port" &
	spid=$!
	for i in $(seq 1 200); do [ -s "$tmp/port" ] && break; sleep 0.05; done
	port=$(cat "$tmp/port")
	[ -n "$port" ] || { echo "FAIL($mode): server did not start"; exit 1; }
	[ "$mode" = offer ] && kill -STOP "$bpid"
	LD_PRELOAD="$pre" timeout 60 "$py" -c '
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); c.sendall(b"hi")
print("sent", flush=True)
d = b""
while len(d) < 4:
    x = c.recv(10)
    if not x: break
    d += x
print(d.decode(), flush=True)
' "$port" >"$tmp/client" &
	cpid=$!
	if [ "$mode" = offer ]; then
		sleep 1
		kill -CONT "$bpid"
		for i in $(seq 1 400); do grep -q sent "$tmp/client" 2>/dev/null && break; sleep 0.05; done
		touch "$tmp/go"
	else
		for i in $(seq 1 400); do grep -q sent "$tmp/client" 2>/dev/null && break; sleep 0.05; done
		kill -STOP "$bpid"
		touch "$tmp/go"
		sleep "$stall"
		kill -CONT "$bpid"
	fi
	wait "$cpid"; rc=$?
	wait "$spid"; spid=""
	out=$(tail -1 "$tmp/client")
	[ $rc = 0 ] && [ "$out" = hihi ] ||
		{ echo "FAIL($mode): echo through a stalled broker: rc $rc, got '$out'"; exit 1; }
	echo "  ok   broker stalled during $mode"
}
scenario claim
scenario offer
# scenario claim, stalled longer than the server waits for its claim's
# answer (2.5 s): the server goes on on TCP, so the broker, when it runs
# again, must not grant the claim it finds queued (it is older than the
# claim timeout) but withdraw the offer: the client then copies what it
# wrote while pending onto TCP.
scenario claim 3.5
echo "slow broker: ok (both ends agreed; echo came back)"
