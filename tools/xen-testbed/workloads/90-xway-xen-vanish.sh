#!/bin/bash
# SPDX-License-Identifier: MIT
# Step 3 of the cross-domain work; the LAST workload (the client domU does
# not survive it).  A shimmed client in the client domU streams to a shimmed
# server in the server domU over an accelerated Xen connection; once the
# server's broker shows it accelerated, the server asks dom0 (xenstore key
# destroy-client) to `xl destroy` the client domU mid-transfer and to remove
# its /local/xway entry.  Passes (server side) when the server application
# gets an error or EOF within VANISH_LIMIT seconds of the destroy (the
# broker aborts its TCP socket: nothing else would ever tell it) and the
# server's broker no longer lists the domain.  The client side has no
# result: report.py accepts that when the server passed.
set -u
role=$1
. "$TB_LIB"
lib=/opt/xway/lib/libxway.so
tb_need "$TB_BIN/xwayd" "$TB_BIN/xwayctl" "$lib"
limit=${VANISH_LIMIT:-120}
port=47305
tb_xwayd_dir
trap tb_xwayd_end EXIT
tb_xwayd_start
export XWAY_BROKER_TIMEOUT_MS=3000
peer_listens() { xenstore-read "/local/xway/$TB_PEER_DOMID/listeners" | grep -Eq ":$port( |\$)"; }

if [ "$role" = client ]; then
	sync        # our earlier results must survive the destroy
	tb_wait vanish/listening 300 > /dev/null || { echo "peer never listened" >&2; exit 1; }
	wait_for 60 peer_listens
	sleep 1
	sync
	LD_PRELOAD=$lib XWAY_BROKER_SOCK=$sock "$TB_BIN/xtb-vchan" client --tcp "$TB_PEER_IP" $port \
		--bytes 64G --pings 1 --timeout "$TB_PROBE_TIMEOUT" > /dev/null 2>&1
	echo "the client domU was not destroyed" >&2
	exit 1
fi

LD_PRELOAD=$lib XWAY_BROKER_SOCK=$sock "$TB_BIN/xtb-vchan" server --tcp "$TB_SELF_IP" $port \
	--timeout "$TB_PROBE_TIMEOUT" > "$d/s" 2> "$d/s.err" &
spid=$!
wait_for 60 sh -c "'$TB_BIN/xwayctl' listeners --json --socket '$sock' | grep -q ':$port\"'" \
	|| { echo "listener never reached the broker" >&2; exit 1; }
tb_signal vanish/listening
accel() { ctl connections --json | grep -q '"state":"accelerated","backend":"xen"'; }
wait_for 120 accel || { echo "the connection was never accelerated" >&2; ctl connections >&2; exit 1; }
sleep 2
kill -0 $spid 2> /dev/null || { echo "the server ended before the destroy" >&2; exit 1; }
tb_signal destroy-client
wait_for 120 xenstore-read "/local/domain/$TB_SELF_DOMID/data/xway-testbed/client-destroyed" \
	|| { echo "dom0 never destroyed the client" >&2; exit 1; }
t0=$(date +%s)
gone=0
for i in $(seq 1 $((limit * 2))); do
	kill -0 $spid 2> /dev/null || { gone=1; break; }
	sleep 0.5
done
t1=$(date +%s)
echo "vanish.server_exit_seconds=$((t1 - t0))"
echo "vanish.server_exited=$gone"
if [ $gone = 0 ]; then
	kill $spid 2> /dev/null
	echo "the server application still waits $limit s after the destroy" >&2
	cat "$d/xwayd.log" >&2
	exit 1
fi
wait $spid; src=$?
cat "$d/s.err" >&2
echo "vanish.server_rc=$src"
forgot=0
wait_for 30 sh -c "! '$TB_BIN/xwayctl' peers --json --socket '$sock' | grep -q '\"domid\":$TB_PEER_DOMID,'" && forgot=1
echo "vanish.broker_forgot=$forgot"
ctl connections >&2 || true
grep -q "Xen domain $TB_PEER_DOMID vanished" <(ctl connections --json) && echo "vanish.record=1" || echo "vanish.record=0"
# dom0's `xway-xen-setup watch` (xway-xen-setup.service) removes the gone
# domain's entry; dom0 says whether it had to do it by hand instead.
wm=$(xenstore-read "/local/domain/$TB_SELF_DOMID/data/xway-testbed/watch-missed" 2> /dev/null || echo "?")
echo "vanish.watch_missed=$wm"
case $wm in
0) echo "report.vanish_watch=dom0's xway-xen-setup watch removed the destroyed domain's entry" ;;
*) echo "report.vanish_watch=dom0's xway-xen-setup watch did NOT remove the entry (dom0 removed it by hand; its console says why)" ;;
esac
[ $src != 0 ] || { echo "the server application saw a clean end, not an error" >&2; exit 1; }
[ $forgot = 1 ] || { echo "the broker still lists domain $TB_PEER_DOMID" >&2; exit 1; }
exit 0
