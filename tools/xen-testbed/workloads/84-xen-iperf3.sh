#!/bin/bash
# SPDX-License-Identifier: MIT
# iperf3 across the two domUs, under LD_PRELOAD=libxway.so on both ends:
# in xtb-server two one-test servers (`iperf3 -s -1`: one process, a select
# loop, no fork: its control and data connections stay on the Xen
# channel), in xtb-client the client sending for XTB_IPERF_SECONDS to the
# first and receiving (-R) from the second.  The same two tests then run
# without the shim against plain servers on other ports: kernel TCP over
# netfront, the baseline measured in the same emulated run.  Checks: no
# iperf3 error, both ends moved bytes, and the verdict of guest/appslib.sh
# over the shimmed tests only (every connection on the Xen channel with the
# received bytes on it, netfront idle).  The report lines carry the
# throughputs (emulated: functional evidence and a ratio, not performance).
set -u
role=$1
app=iperf3
need=(/usr/bin/iperf3 /usr/bin/python3)
secs=${XTB_IPERF_SECONDS:-5}
up=5311; down=5312      # shimmed servers (xway)
kup=5313; kdown=5314    # plain servers (kernel TCP over netfront)
# TCP fallback reasons this workload accepts (empty: none): iperf3 is one
# process per end, nothing leaves the channel.
ALLOW=""
# The common part of the 8x workloads: broker, shim, checks, verdict.
. "${TB_LIB%/*}/appslib.sh"

# summary NAME: one line from NAME.json: received bytes and bits/s.
summary() {
	python3 - "$d/$1.json" <<-'PY'
	import json, sys
	d = json.load(open(sys.argv[1]))
	if d.get("error"):
	    sys.exit(d["error"])
	e = d["end"]
	s, r = e["sum_sent"], e["sum_received"]
	if s["bytes"] <= 0 or r["bytes"] <= 0:
	    sys.exit(f"sent {s['bytes']} B, received {r['bytes']} B")
	print(r["bytes"], "%.1f" % (r["bits_per_second"] / 1e6))
	PY
}
if [ "$role" = server ]; then
	for p in $up $down; do
		"${XW[@]}" iperf3 -s -1 -B "$TB_SELF_IP" -p $p > "$d/server-$p.log" 2>&1 &
		daemon_up iperf3 $! $p
	done
	for p in $kup $kdown; do
		iperf3 -s -1 -B "$TB_SELF_IP" -p $p > "$d/server-$p.log" 2>&1 &
		STOP+=($!)
	done
	# (their output is buffered: ask the kernel)
	for p in $kup $kdown; do wait_for 60 sh -c "ss -ltn | grep -q ':$p '" || bad "plain iperf3 on $p did not start"; done
	# The window of the shimmed tests only: the baseline uses netfront.
	serve_until iperf3/xway-done
	payload=$(tb_wait iperf3/payload 10) || bad "no payload figure from the client"
	tb_wait iperf3/done 800 > /dev/null || bad "the client never finished the baseline"
	cat "$d"/server-*.log >&2
else
	await_peer_listener iperf3/listening $up
	wait_for 60 peer_listens $down || log "the peer's listener on $down is not in xenstore"
	# test3 NAME PORT up|down [SHIM...]: one bounded iperf3 client; down
	# is -R (the server sends).
	test3() {
		local name=$1 port=$2 r=; shift 2
		[ "$1" = down ] && r=-R; shift
		[ ${#err[@]} = 0 ] || { log "$name: not run (an earlier step failed)"; return 1; }
		timeout 150 "$@" iperf3 -c "$TB_PEER_IP" -p "$port" -t "$secs" -J --connect-timeout 60000 $r \
			> "$d/$name.json" 2>> "$d/client.log" \
			|| { bad "iperf3 $name failed (exit $?): $(tail -c 300 "$d/$name.json" | tr '\n' ' ')"; return 1; }
		summary "$name" > "$d/$name.sum" 2>> "$d/client.log" || { bad "iperf3 $name: $(tail -n 1 "$d/client.log")"; return 1; }
		log "$name: $(cat "$d/$name.sum") (received bytes, Mbit/s)"
	}
	n0=$(nic_bytes)
	test3 xway-up $up up "${XW[@]}"
	test3 xway-down $down down "${XW[@]}"
	n1=$(nic_bytes)
	payload=0
	for t in xway-up xway-down; do
		read -r b r < "$d/$t.sum" 2> /dev/null && payload=$((payload + b))
	done
	tb_signal iperf3/payload $payload
	tb_signal iperf3/xway-done
	# The baseline crosses netfront: not before the server's window closed.
	tb_wait iperf3/counted 120 > /dev/null || bad "the server never closed its counting window"
	test3 kernel-up $kup up env
	test3 kernel-down $kdown down env
	tb_signal iperf3/done
	declare -A mbps
	for t in xway-up xway-down kernel-up kernel-down; do
		read -r b r < "$d/$t.sum" 2> /dev/null || { b=0; r=0; }
		mbps[$t]=$r
		echo "iperf3.$t.bytes=$b"; echo "iperf3.$t.mbps=$r"
	done
	for dir in up down; do
		echo "report.iperf3_xen_$dir=xway ${mbps[xway-$dir]} Mbit/s vs kernel TCP over netfront ${mbps[kernel-$dir]} Mbit/s (x$(awk -v a="${mbps[xway-$dir]}" -v b="${mbps[kernel-$dir]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'), emulated, ${secs} s, client $( [ $dir = up ] && echo sends || echo receives: -R))"
	done
fi
conclude "${payload:-0}"
