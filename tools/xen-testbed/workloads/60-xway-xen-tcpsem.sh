#!/bin/bash
# SPDX-License-Identifier: MIT
# The shim's TCP-semantics cases (tests/integration/shim/tcpsem.c, the ones
# `make test` runs on loopback and across network namespaces) across the
# two domUs: per case, `xway-tcpsem server CASE 4` under LD_PRELOAD=libxway.so
# listens on the server domU's address, its port goes to the client domU
# through xenstore (tb_signal), and `xway-tcpsem client` runs there under
# the shim; xwayd in Xen mode in both.  XWAY_TEST_REMOTE=1: where a case
# signals its server process (nonblock: SIGUSR1, kill: SIGKILL), the client
# prints the signal and this script relays it through xenstore to the
# server domU, which delivers it.  XWAY_TEST_EXPECT=accel on both ends.
# Passes when every case passes on both ends and this domain's broker
# shows each case's connection (except "refused": no connection) with
# backend xen, bytes on the channel (but for the SIGKILLed server of
# "kill"), and its kernel TCP socket carrying < 4 KiB of payload ("oob":
# sending urgent data leaves the channel, so backend tcp with reason
# left-channel); and the NIC moved under a tenth of the channel's
# bytes over the whole workload.  TCPSEM_CASES overrides the case list.
set -u
role=$1
. "$TB_LIB"
lib=/opt/xway/lib/libxway.so
tcpsem=$TB_BIN/xway-tcpsem
tb_need "$TB_BIN/xwayd" "$TB_BIN/xwayctl" "$lib" "$tcpsem"
nic=enX0
tb_xwayd_dir
save() {
	for f in "$d"/*.err "$d"/*.out "$d/conns.json"; do
		[ -e "$f" ] && cp "$f" "${TB_OUT:-/tmp/x}.${f##*/}" 2> /dev/null
	done
	tb_xwayd_end
}
trap save EXIT
tb_xwayd_start
# Emulated domUs: broker replies may exceed the shim's default 100 ms.
export XWAY_BROKER_TIMEOUT_MS=3000
cases=${TCPSEM_CASES:-$("$tcpsem" list)}
# Cases of behaviour the Xen backend does not emulate yet (docs/XEN.md,
# "Known gaps across domains"; they pass on local rings): splice: the
# server echoes 100000 B through a pipe
# while the client writes them all before reading, which needs more
# buffering than two 32 KiB Xen rings (kernel TCP buffers far more): a
# deadlock, reproduced on local rings with XWAY_RING_SIZE=32768.  (et runs
# since session 8: looking at the level no longer asks the peer for read
# notifications, and an edge-triggered record reports only a wake-up that
# brought bytes, freed awaited space or changed a bit: shim/epoll.c.  So
# does rstwrite: a write after the peer's abortive close reads the reset
# on TCP first, shim/io.c.)
xen_gaps="splice"
if [ -z "${TCPSEM_CASES:-}" ]; then
	cases=$(for c in $cases; do case " $xen_gaps " in *" $c "*) ;; *) echo "$c" ;; esac; done)
	echo "report.tcpsem_xen_gaps_$role=not run across domains (known Xen gaps): $xen_gaps"
fi
limit=200            # per process; tcpsem's own alarm() is 120 s
nic_rx0=$(cat /sys/class/net/$nic/statistics/rx_bytes)
nic_tx0=$(cat /sys/class/net/$nic/statistics/tx_bytes)
shim_env=(LD_PRELOAD=$lib XWAY_BROKER_SOCK=$sock XWAY_TEST_REMOTE=1 XWAY_TEST_EXPECT=accel XWAY_TEST_XEN_GAPS=1
	  XWAY_TEST_MB=${TCPSEM_MB:-8})
peer_key() { tb_key "$TB_PEER_DOMID" "$1"; }
declare -A port_of rc_of
fail=0; npass=0

# serve CASE: run the server, publish its port, deliver relayed signals.
serve() {
	local tc=$1 spid pid port="" sig sent=0 i
	env "${shim_env[@]}" XWAY_TEST_BIND="$TB_SELF_IP" timeout -s KILL $limit \
		"$tcpsem" server "$tc" 4 > "$d/$tc.s.out" 2> "$d/$tc.s.err" &
	spid=$!
	wait_for 60 grep -q . "$d/$tc.s.out" && read -r port pid < "$d/$tc.s.out"
	if [ -z "$port" ]; then
		echo "$tc: the server printed no port" >&2
		tb_signal "tcpsem/$tc/port" none
		wait $spid; rc_of[$tc]=$?; return
	fi
	port_of[$tc]=$port
	[ "$tc" = refused ] || wait_for 60 sh -c "'$TB_BIN/xwayctl' listeners --json --socket '$sock' | grep -q ':$port\"'" \
		|| echo "$tc: listener on $port never reached the broker" >&2
	tb_signal "tcpsem/$tc/port" "$port"
	for i in $(seq 1 $((limit * 2 + 20))); do
		kill -0 $spid 2> /dev/null || break
		if [ $sent = 0 ] && sig=$(xenstore-read "$(peer_key "tcpsem/$tc/signal")" 2> /dev/null); then
			echo "$tc: the client asks for SIG$sig" >&2
			kill -s "$sig" "$pid"; sent=1
		fi
		sleep 0.5
	done
	wait $spid; rc_of[$tc]=$?
	# kill: SIGKILLed on the client's request, as the case wants.
	[ "$tc" = kill ] && [ $sent = 1 ] && [ "${rc_of[$tc]}" = 137 ] && rc_of[$tc]=0
}

# connect CASE: wait for the port, run the client, relay its signal.
connect() {
	local tc=$1 port cpid sent=0 i sig
	port=$(tb_wait "tcpsem/$tc/port" 300) || { echo "$tc: the peer never listened" >&2; rc_of[$tc]=1; return; }
	[ "$port" = none ] && { rc_of[$tc]=1; return; }
	port_of[$tc]=$port
	if [ "$tc" != refused ]; then
		wait_for 60 sh -c "xenstore-read /local/xway/$TB_PEER_DOMID/listeners | grep -Eq ':$port( |\$)'" \
			|| echo "$tc: the peer's listener is not in xenstore" >&2
		sleep 1      # our broker reads it on its watch event
	fi
	env "${shim_env[@]}" XWAY_TEST_HOST="$TB_PEER_IP" timeout -s KILL $limit \
		"$tcpsem" client "$tc" 4 "$port" 0 > "$d/$tc.c.out" 2> "$d/$tc.c.err" &
	cpid=$!
	for i in $(seq 1 $((limit * 2 + 20))); do
		if [ $sent = 0 ] && sig=$(sed -n 's/^SIGNAL //p' "$d/$tc.c.out" | head -n1) && [ -n "$sig" ]; then
			tb_signal "tcpsem/$tc/signal" "$sig"; sent=1
		fi
		kill -0 $cpid 2> /dev/null || break
		sleep 0.5
	done
	wait $cpid; rc_of[$tc]=$?
	if [ $sent = 0 ] && sig=$(sed -n 's/^SIGNAL //p' "$d/$tc.c.out" | head -n1) && [ -n "$sig" ]; then
		tb_signal "tcpsem/$tc/signal" "$sig"
	fi
}

t0=$(date +%s)
for tc in $cases; do
	if [ "$role" = server ]; then serve "$tc"; else connect "$tc"; fi
	tb_case_result tcpsem "$tc" "${rc_of[$tc]}"
	tb_barrier "tcpsem/$tc/done" 300 > /dev/null || { echo "$tc: the peer never finished" >&2; fail=1; break; }
done
echo "tcpsem.seconds=$(( $(date +%s) - t0 ))"
tb_collect_records

# Per case: this broker's record of the connection to the case's port.
recs=$(tb_records "$d/conns.json")
chan_total=0; accel_ok=0; accel_bad=""
for tc in $cases; do
	[ "$tc" = refused ] && continue
	p=${port_of[$tc]:-x}
	rec=$(echo "$recs" | grep "\"server\":{\"addr\":\"[^\"]*:$p\"" | tail -n1)
	c2s=$(tb_num "$rec" bytes_c2s); s2c=$(tb_num "$rec" bytes_s2c)
	tcpmax=0
	for k in tcp_bytes_sent tcp_bytes_received; do
		for v in $(echo "$rec" | grep -o "\"$k\":[0-9]*" | cut -d: -f2); do
			[ "$v" -gt $tcpmax ] && tcpmax=$v
		done
	done
	backend=$(echo "$rec" | grep -o '"backend":"[a-z]*"' | head -n1 | cut -d'"' -f4)
	reason=$(echo "$rec" | grep -o '"reason":"[a-z-]*"' | head -n1 | cut -d'"' -f4)
	echo "tcpsem.$tc.backend=${backend:-none}"
	if [ "$tc" = oob ]; then
		# Urgent data has no place on the channel: the sender leaves it
		# and both ends go on on TCP; each broker records that.
		echo "tcpsem.$tc.reason=${reason:-none}"
		if [ "$backend" = tcp ] && [ "$reason" = left-channel ]; then
			accel_ok=$((accel_ok + 1))
		else
			accel_bad="$accel_bad $tc"
		fi
		continue
	fi
	echo "tcpsem.$tc.chan_bytes=$(( ${c2s:-0} + ${s2c:-0} ))"
	echo "tcpsem.$tc.max_tcp_payload=$tcpmax"
	chan_total=$(( chan_total + ${c2s:-0} + ${s2c:-0} ))
	# The server of "kill" is SIGKILLed: its shim reports no bytes.
	bytes_ok=1
	[ $(( ${c2s:-0} + ${s2c:-0} )) -gt 0 ] || { [ "$role.$tc" = server.kill ] || bytes_ok=0; }
	if [ "$backend" = xen ] && [ $bytes_ok = 1 ] && [ $tcpmax -lt 4096 ]; then
		accel_ok=$((accel_ok + 1))
	else
		accel_bad="$accel_bad $tc"
	fi
done
nic=$(( $(cat /sys/class/net/$nic/statistics/rx_bytes) - nic_rx0 +
	$(cat /sys/class/net/$nic/statistics/tx_bytes) - nic_tx0 ))
ncases=$(echo $cases | wc -w)
echo "tcpsem.chan_bytes=$chan_total"
echo "tcpsem.nic_bytes=$nic"
echo "report.tcpsem_$role=cases passed $npass/$ncases; on xen with bytes, TCP payload < 4 KiB (oob: left for TCP): $accel_ok (not:${accel_bad:- none}); channel $chan_total B, NIC $nic B"
[ $fail = 0 ] || { echo "a case failed" >&2; exit 1; }
[ -z "$accel_bad" ] || { echo "not accelerated on xen:$accel_bad" >&2; cat "$d/conns.json" >&2; exit 1; }
[ $((nic * 10)) -lt $chan_total ] || { echo "the NIC moved $nic B for $chan_total B on the channel" >&2; exit 1; }
exit 0
