#!/bin/bash
# SPDX-License-Identifier: MIT
# Broker restart (issue #7.3): xwayd in Xen mode in both domUs; a shimmed
# xtb-conns client in the client domU keeps RESTART_CONNS (4) accelerated
# connections busy with verified request/reply rounds to a shimmed server
# in the server domU while the server domU's broker is stopped (SIGTERM)
# and started again, then the client domU's.  Passes when
#   - every round on those connections is verified, before, during and
#     after the restarts, and the stream was still running after both;
#   - their kernel TCP sockets carried no payload (ss -tin bytes_acked /
#     bytes_received, taken after both restarts): the bytes stayed on the
#     channel, nothing fell back to TCP;
#   - new connections to the SAME listener (the server process was never
#     restarted) are accelerated again by the new brokers: at most
#     RESTART_WARMUP (3) connections may go to TCP while the client's
#     broker learns the peer's new instance (the restarted server broker
#     restores the listener from its state file at start; session 6's run
#     needed none), then
#     RESTART_NEW (20) in a row must all be recorded with backend xen by
#     the new broker of this domain.
set -u
role=$1
. "$TB_LIB"
lib=/opt/xway/lib/libxway.so
tb_need "$TB_BIN/xwayd" "$TB_BIN/xwayctl" "$TB_BIN/xtb-conns" "$lib"
k=${RESTART_CONNS:-4}
new=${RESTART_NEW:-20}
warm=${RESTART_WARMUP:-3}
port=47375
tmo=600
tb_xwayd_dir
bpid=
start_broker() {
	rm -f "$sock"
	tb_xwayd_start
}
stop_broker() {
	kill -TERM "$bpid" 2> /dev/null
	wait_for 30 sh -c "! kill -0 $bpid" || { echo "xwayd ignored SIGTERM" >&2; kill -KILL "$bpid"; }
	wait "$bpid" 2> /dev/null
	echo "=== xwayd stopped $(date +%T.%N)" >> "$d/xwayd.log"
}
trap tb_xwayd_end EXIT
start_broker
export XWAY_BROKER_TIMEOUT_MS=3000
peer_listens() { xenstore-read "/local/xway/$TB_PEER_DOMID/listeners" | grep -Eq ":$port( |\$)"; }
recs() { ctl connections --json | tb_records | grep "\"server\":{\"addr\":\"[^\"]*:$port\""; }
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }
restart() {
	say "restarting this domain's xwayd (pid $bpid)" >&2
	stop_broker
	start_broker || bad "xwayd did not start again"
	wait_for 30 sh -c "'$TB_BIN/xwayctl' status --socket '$sock'" || bad "the new xwayd does not answer"
}

if [ "$role" = server ]; then
	LD_PRELOAD=$lib XWAY_BROKER_SOCK=$sock "$TB_BIN/xtb-conns" server --tcp "$TB_SELF_IP" $port \
		--conns 100000 --stop "$d/stop" --timeout $tmo > "$d/s" 2> "$d/s.err" &
	spid=$!
	wait_for 60 sh -c "'$TB_BIN/xwayctl' listeners --json --socket '$sock' | grep -q ':$port\"'" \
		|| bad "listener never reached the broker"
	tb_signal r/listening
	tb_wait r/streaming 300 > /dev/null || bad "the client never streamed"
	live=$(recs | grep '"ended":null' | grep -c '"backend":"xen"')
	echo "restart.server.live_before=$live"
	[ "$live" -ge "$k" ] || bad "only $live of $k connections accelerated before the restart"
	restart
	tb_signal r/srv-restarted
	tb_wait r/done $((tmo + 60)) > /dev/null || bad "the client never finished"
	touch "$d/stop"
	wait_for 60 sh -c "! kill -0 $spid" || { kill $spid; bad "server did not end"; }
	wait $spid || bad "server failed"
	cat "$d/s.err" >&2
	grep -v '\.\(before\|after\)\.' "$d/s" | sed 's/^/restart./'
	sleep 3
	all=$(recs)
else
	tb_wait r/listening 300 > /dev/null || { echo "peer never listened" >&2; exit 1; }
	wait_for 60 peer_listens || echo "the peer's listener is not in xenstore" >&2
	sleep 1
	LD_PRELOAD=$lib XWAY_BROKER_SOCK=$sock "$TB_BIN/xtb-conns" client --tcp "$TB_PEER_IP" $port \
		--conns "$k" --stream --ready "$d/ready" --go "$d/go" --timeout $tmo > "$d/c" 2> "$d/c.err" &
	cpid=$!
	wait_for 300 sh -c "test -e '$d/ready' || ! kill -0 $cpid" || bad "the stream never started"
	live=$(recs | grep '"ended":null' | grep -c '"backend":"xen"')
	echo "restart.client.live_before=$live"
	[ "$live" -ge "$k" ] || bad "only $live of $k connections accelerated before the restart"
	tb_signal r/streaming
	tb_wait r/srv-restarted 300 > /dev/null || bad "the server's broker never restarted"
	restart
	sleep 5          # rounds go on after both restarts
	kill -0 $cpid 2> /dev/null || bad "the stream ended during the restarts"
	# Kernel TCP payload of the stream's sockets: nothing on TCP.
	ss -tin "dst $TB_PEER_IP:$port" > "$d/ss" 2>&1
	tcp=$(grep -o 'bytes_\(acked\|received\):[0-9]*' "$d/ss" | cut -d: -f2 | awk '{s += $1} END {print s + 0}')
	touch "$d/go"
	wait $cpid || bad "the stream failed"
	cat "$d/c.err" >&2
	grep -v '\.\(before\|after\|open\)\.' "$d/c" | sed 's/^/restart./'
	sent=$(sed -n 's/^client.bytes=//p' "$d/c")
	echo "restart.stream_tcp_payload=$tcp"
	[ -n "$sent" ] && [ "$sent" -gt 0 ] || bad "no stream bytes"
	[ "$tcp" -le $(( ${sent:-0} / 100 )) ] || bad "the stream's TCP sockets carried $tcp B of ${sent:-0}: it left the channel"
	# New connections to the same listener.
	wait_for 60 peer_listens || echo "the peer's new broker has not published the listener yet" >&2
	sleep 1
	tries=0; accel=0
	while [ $tries -lt $((warm + 1)) ] && [ $accel = 0 ]; do
		tries=$((tries + 1))
		LD_PRELOAD=$lib XWAY_BROKER_SOCK=$sock "$TB_BIN/xtb-conns" client --tcp "$TB_PEER_IP" $port \
			--conns 1 --churn --timeout 120 > "$d/w" 2>> "$d/w.err" || bad "warm-up connection $tries failed"
		sleep 1
		accel=$(recs | grep -c '"backend":"xen"')
	done
	echo "restart.new_tcp_before_accel=$((tries - accel))"
	[ "$accel" -ge 1 ] || bad "no new connection accelerated after $tries"
	LD_PRELOAD=$lib XWAY_BROKER_SOCK=$sock "$TB_BIN/xtb-conns" client --tcp "$TB_PEER_IP" $port \
		--conns "$new" --churn --timeout $tmo > "$d/n" 2> "$d/n.err" || bad "new connections failed"
	cat "$d/w.err" "$d/n.err" >&2
	grep -v '\.\(before\|after\)\.' "$d/n" | sed 's/^/restart.new./'
	tb_signal r/done
	sleep 3
	all=$(recs)
	xen_new=$(echo "$all" | grep -c '"backend":"xen"')
	[ "$xen_new" -ge $((new + 1)) ] || bad "the new broker recorded $xen_new xen connections, expected $((new + 1))"
	echo "report.restart=both brokers restarted during a verified stream on $k accelerated connections ($(sed -n 's/^client.rounds=//p' "$d/c") rounds, kernel TCP payload $tcp B); after the restarts $((tries - accel)) connection(s) on TCP until the listener was registered again, then $new of $new accelerated"
fi
# The new broker's records of this port (the old ones went with the old
# instance): new connections xen, fallbacks with their reasons.
echo "restart.$role.new_xen=$(echo "$all" | grep -c '"backend":"xen"')"
echo "restart.$role.new_tcp=$(echo "$all" | grep -c '"backend":"tcp"')"
echo "$all" | grep '"backend":"tcp"' | grep -o '"reason":"[^"]*","detail":"[^"]*"' | sort | uniq -c >&2
ctl stats >&2 || true
grep -v '^<7>' "$d/xwayd.log" | tail -n 40 >&2
[ $fail = 0 ]
