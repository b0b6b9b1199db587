#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# iperf3 under the shim: a daemonized server (-s -D, select loop, TCP_INFO /
# TCP_CONGESTION / TCP_MAXSEG getsockopts) and a client moving a 64 MiB file
# each way with -F (so the bytes are real and can be checked: the receiving
# side writes what it got to its own -F file).  Each test uses two
# connections: the control one and a data stream.  iperf3 stops reading the
# data stream when the sender announces TEST_END, so by design (plain TCP
# too) the receiver may keep a little less than was sent: the check is that
# what it kept is a byte-exact prefix and is what iperf3 itself reports.
. "$(dirname "$0")/../lib/common.sh"
compat_init iperf3
compat_need iperf3

MB=64
mkdata "$T/up.bin" $MB
mkdata "$T/down.bin" $MB
size=$(stat -c%s "$T/up.bin")

# Upload: the server's -F file is where it writes what it received.
port=$(free_port)
xw iperf3 -s -D -1 -p "$port" -B 127.0.0.1 -F "$T/up.recv" -I "$T/srv1.pid" \
	--logfile "$T/log/server-up" || fail "iperf3 -s -D failed to start"
COMPAT_PIDFILES+=("$T/srv1.pid")
wait_file "$T/srv1.pid" 15
wait_port "$port" 15
timeout 120 "${XW[@]}" iperf3 -c 127.0.0.1 -p "$port" -F "$T/up.bin" -n "$size" -J \
	>"$T/log/client-up.json" 2>&1 || fail "iperf3 client (upload) failed: $(head -c 300 "$T/log/client-up.json")"
# -1: the server exits after the test; wait for it so its file is complete.
for ((i = 0; i < 100; i++)); do kill -0 "$(cat "$T/srv1.pid" 2>/dev/null)" 2>/dev/null || break; sleep 0.1; done
same_prefix "$T/up.bin" "$T/up.recv" "upload"

# Download (-R): the server sends its -F file, the client writes it.
port2=$(free_port)
xw iperf3 -s -D -1 -p "$port2" -B 127.0.0.1 -F "$T/down.bin" -I "$T/srv2.pid" \
	--logfile "$T/log/server-down" || fail "iperf3 -s -D failed to start"
COMPAT_PIDFILES+=("$T/srv2.pid")
wait_file "$T/srv2.pid" 15
wait_port "$port2" 15
timeout 120 "${XW[@]}" iperf3 -c 127.0.0.1 -p "$port2" -R -F "$T/down.recv" -n "$size" -J \
	>"$T/log/client-down.json" 2>&1 || fail "iperf3 client (download) failed: $(head -c 300 "$T/log/client-down.json")"
same_prefix "$T/down.bin" "$T/down.recv" "download"

# iperf3's own accounting must agree (it reads TCP_INFO through the shim).
up=$(stat -c%s "$T/up.recv"); down=$(stat -c%s "$T/down.recv")
python3 - "$size" "$T/log/client-up.json" "$up" "$T/log/client-down.json" "$down" <<'PY' || fail "iperf3 JSON report inconsistent"
import json, sys
size = int(sys.argv[1])
for f, got in ((sys.argv[2], int(sys.argv[3])), (sys.argv[4], int(sys.argv[5]))):
    d = json.load(open(f))
    if d.get("error"):
        sys.exit(f"{f}: {d['error']}")
    e = d["end"]
    sent, rcvd = e["sum_sent"]["bytes"], e["sum_received"]["bytes"]
    print(f"{f.rsplit('/',1)[1]}: sent={sent} received={rcvd} file={got}")
    if sent != size:
        sys.exit(f"{f}: sender reports {sent} bytes, expected {size}")
    if rcvd != got:
        sys.exit(f"{f}: receiver reports {rcvd} bytes but its file holds {got}")
PY
check_accel "$up" "$down" 4
pass "iperf3 $(pkg_version iperf3), ${MB} MiB sent each way, $up/$down bytes kept"
