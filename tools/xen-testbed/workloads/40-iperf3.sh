#!/bin/bash
# SPDX-License-Identifier: MIT
# iperf3 over netfront between the domUs, the usual yardstick for TCP
# throughput (client sends for TB_IPERF_SECONDS).
set -u
role=$1
. "$TB_LIB"
if ! command -v iperf3 > /dev/null; then
	echo "skip: iperf3 not installed in the guest" >&2; exit 77
fi
if [ "$role" = server ]; then
	# -1: serve one test, then exit.
	timeout 200 iperf3 -s -1 -B "$TB_SELF_IP" -p 5201 > /tmp/iperf3.server 2>&1 &
	pid=$!
	wait_for 30 grep -q 'Server listening' /tmp/iperf3.server
	tb_signal iperf3-ready
	wait $pid; rc=$?
	cat /tmp/iperf3.server >&2
	exit $rc
fi
tb_wait iperf3-ready 60 > /dev/null || { echo "server never ready" >&2; exit 1; }
timeout 120 iperf3 -c "$TB_SRV_IP" -p 5201 -t "$TB_IPERF_SECONDS" -f m > /tmp/iperf3.client 2>&1
rc=$?
cat /tmp/iperf3.client >&2
[ $rc = 0 ] || exit $rc
awk '/receiver$/ { print "iperf3_receiver_Mbps=" $7; found = 1 }
     /sender$/   { print "iperf3_sender_Mbps=" $7 }
     END { exit !found }' /tmp/iperf3.client
