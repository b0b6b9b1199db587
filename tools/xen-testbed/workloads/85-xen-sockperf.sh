#!/bin/bash
# SPDX-License-Identifier: MIT
# sockperf across the two domUs, under LD_PRELOAD=libxway.so on both ends:
# in xtb-server `sockperf server --tcp` (one process, recvfrom on blocking
# sockets: nothing leaves the channel), in xtb-client a TCP ping-pong of
# 64-byte messages (latency) and a one-way throughput run of 60000-byte
# messages (partial reads and writes, boundaries anywhere in the stream),
# XTB_SOCKPERF_SECONDS each.  sockperf numbers every message and checks
# the numbers on receipt: the checks are zero dropped, duplicated or
# out-of-order messages and as many replies as requests.  The same two runs
# then go without the shim to a plain server on another port: kernel TCP
# over netfront, the baseline of the same emulated run.  The verdict of
# guest/appslib.sh covers the shimmed runs only; the report lines carry
# the figures (emulated: functional evidence and a ratio, not performance).
set -u
role=$1
app=sockperf
need=(/usr/bin/sockperf)
secs=${XTB_SOCKPERF_SECONDS:-5}
port=5321               # shimmed server (xway)
kport=5322              # plain server (kernel TCP over netfront)
# TCP fallback reasons this workload accepts (empty: none): sockperf is one
# process per end, nothing leaves the channel.
ALLOW=""
# The common part of the 8x workloads: broker, shim, checks, verdict.
. "${TB_LIB%/*}/appslib.sh"

if [ "$role" = server ]; then
	"${XW[@]}" sockperf server --tcp -i "$TB_SELF_IP" -p $port > "$d/server.log" 2>&1 &
	daemon_up sockperf $! $port
	sockperf server --tcp -i "$TB_SELF_IP" -p $kport > "$d/server-kernel.log" 2>&1 &
	STOP+=($!)
	wait_for 60 sh -c "ss -ltn | grep -q ':$kport '" || bad "the plain sockperf server did not start"
	# The window of the shimmed runs only: the baseline uses netfront.
	serve_until sockperf/xway-done
	payload=$(tb_wait sockperf/payload 10) || bad "no payload figure from the client"
	tb_wait sockperf/done 800 > /dev/null || bad "the client never finished the baseline"
	kill -0 "${STOP[0]}" 2> /dev/null || bad "the sockperf server exited"
else
	await_peer_listener sockperf/listening $port
	# sp NAME MODE PORT SHIM...: one bounded sockperf client run.
	sp() {
		local name=$1 mode=$2 port=$3 m=64; shift 3
		[ "$mode" = throughput ] && m=60000
		[ ${#err[@]} = 0 ] || { log "$name: not run (an earlier step failed)"; return 1; }
		timeout 120 "$@" sockperf "$mode" --tcp -i "$TB_PEER_IP" -p "$port" -m $m -t "$secs" \
			> "$d/$name.out" 2>&1 \
			|| { bad "sockperf $name exited $? ($(tail -n 3 "$d/$name.out" | tr '\n' ' '))"; return 1; }
	}
	# pp NAME: a ping-pong run's integrity checks; sets pb (bytes both ways)
	# and lat (average latency, usec).
	pp() {
		local o=$d/$1.out s r vs vr q
		pb=0; lat=0
		read -r s r <<< "$(sed -n 's/.*\[Total Run\].*SentMessages=\([0-9]*\); ReceivedMessages=\([0-9]*\).*/\1 \2/p' "$o")"
		read -r vs vr <<< "$(sed -n 's/.*\[Valid Duration\].*SentMessages=\([0-9]*\); ReceivedMessages=\([0-9]*\).*/\1 \2/p' "$o")"
		q=$(sed -n 's/.*# dropped messages = \([0-9]*\); # duplicated messages = \([0-9]*\); # out-of-order messages = \([0-9]*\).*/\1 \2 \3/p' "$o")
		lat=$(sed -n 's/.*Summary: Latency is \([0-9.]*\) usec.*/\1/p' "$o")
		if [ -z "$s" ] || [ -z "$vs" ] || [ -z "$lat" ] || [ "$q" != "0 0 0" ] || [ "$s" = 0 ] \
			|| [ $((s - r)) -lt 0 ] || [ $((s - r)) -gt 1 ] || [ "$vs" != "$vr" ]; then
			bad "$1: integrity check failed (sent '$s' received '$r', valid '$vs'/'$vr', dropped/dup/ooo '$q')"
			lat=0; return
		fi
		log "$1: $s sent, $r received, none dropped, duplicated or reordered; latency $lat usec"
		pb=$(((s + r) * 64))
	}
	# tp NAME: a throughput run's figures; sets tb (bytes sent) and bw (MB/s).
	tp() {
		local o=$d/$1.out n
		tb=0
		n=$(sed -n 's/.*Total of \([0-9]*\) messages sent.*/\1/p' "$o")
		bw=$(sed -n 's/.*BandWidth is \([0-9.]*\) MBps.*/\1/p' "$o")
		[ -n "$n" ] && [ "$n" -gt 0 ] && [ -n "$bw" ] || { bad "$1: no messages sent"; bw=0; return; }
		log "$1: $n messages of 60000 B sent, $bw MB/s"
		tb=$((n * 60000))
	}
	n0=$(nic_bytes)
	sp xway-pp ping-pong $port "${XW[@]}"
	sp xway-tp throughput $port "${XW[@]}"
	n1=$(nic_bytes)
	pp xway-pp; plat=$lat
	tp xway-tp; tbw=$bw
	payload=$((pb + tb))
	tb_signal sockperf/payload $payload
	tb_signal sockperf/xway-done
	# The baseline crosses netfront: not before the server's window closed.
	tb_wait sockperf/counted 120 > /dev/null || bad "the server never closed its counting window"
	sp kernel-pp ping-pong $kport env
	sp kernel-tp throughput $kport env
	pp kernel-pp; klat=$lat
	tp kernel-tp; kbw=$bw
	tb_signal sockperf/done
	echo "sockperf.xway.latency_us=$plat"; echo "sockperf.kernel.latency_us=$klat"
	echo "sockperf.xway.MBps=$tbw"; echo "sockperf.kernel.MBps=$kbw"
	ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
	echo "report.sockperf_xen_latency=ping-pong 64 B: xway $plat us vs kernel TCP over netfront $klat us (kernel/xway latency x$(ratio "$klat" "$plat"): above 1 means xway is faster), emulated, ${secs} s"
	echo "report.sockperf_xen_throughput=60000 B messages: xway $tbw MB/s vs kernel TCP over netfront $kbw MB/s (x$(ratio "$tbw" "$kbw")), emulated, ${secs} s"
fi
conclude "${payload:-0}"
