#!/bin/bash
# SPDX-License-Identifier: MIT
# xway in local mode inside each PV domU (no cross-domain traffic): a
# private xwayd, and xtb-vchan's verified TCP transfer and ping-pong on
# 127.0.0.1 with both ends under LD_PRELOAD=libxway.so.  Passes when every
# byte and echo is verified and the broker reports the connection moved the
# transfer over the local channel (bytes_c2s >= the transfer).  Shows that
# the shim, memfd rings and eventfds work under a Xen PV kernel.  Both domUs
# run it on their own; the role does not matter.
set -u
. "$TB_LIB"
lib=/opt/xway/lib/libxway.so
tb_need "$TB_BIN/xwayd" "$TB_BIN/xwayctl" "$lib"
bytes=16777216
d=$(mktemp -d)
sock=$d/xwayd.sock
"$TB_BIN/xwayd" --foreground --socket "$sock" > "$d/xwayd.log" 2>&1 &
bpid=$!
trap 'kill $bpid 2> /dev/null; rm -rf "$d"' EXIT
wait_for 60 test -S "$sock" || { echo "xwayd did not start" >&2; cat "$d/xwayd.log" >&2; exit 1; }
# Under emulation (and a loaded host) a broker reply can take longer than
# the shim's default 100 ms; a LISTEN_ADD that times out is only retried at
# the next accept, so the listener would never show up in time.
export XWAY_BROKER_TIMEOUT_MS=3000
run() { LD_PRELOAD=$lib XWAY_BROKER_SOCK=$sock "$TB_BIN/xtb-vchan" "$@" --timeout "$TB_PROBE_TIMEOUT"; }
run server --tcp 127.0.0.1 47201 > "$d/s" 2> "$d/s.err" &
spid=$!
# Connect only once the broker knows the listener: a connect refused
# before that is (correctly) left on TCP, and a quick retry may be too, which
# is not what this workload is about.
listening() { "$TB_BIN/xwayctl" listeners --json --socket "$sock" | grep -q '"127.0.0.1:47201"'; }
wait_for 60 listening || { echo "the listener never reached the broker" >&2; exit 1; }
run client --tcp 127.0.0.1 47201 --bytes $bytes --pings "$TB_PINGS" > "$d/c" 2> "$d/c.err"
crc=$?
wait $spid; src=$?
cat "$d/s.err" "$d/c.err" >&2
"$TB_BIN/xwayctl" connections --json --socket "$sock" > "$d/conns.json" 2>&1
cat "$d/conns.json" >&2
sed 's/^/local./' "$d/c"
chan=$(grep -o '"bytes_c2s":[0-9]*' "$d/conns.json" | cut -d: -f2 | sort -n | tail -n1)
echo "local.chan_bytes_c2s=${chan:-0}"
accel=0; [ "${chan:-0}" -ge $bytes ] && accel=1
echo "local.accelerated=$accel"
[ $crc = 0 ] && [ $src = 0 ] || { echo "transfer failed (client $crc, server $src)" >&2; exit 1; }
[ $accel = 1 ] || { echo "the connection was not accelerated" >&2; exit 1; }
