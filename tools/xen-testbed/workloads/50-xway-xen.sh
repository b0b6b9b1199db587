#!/bin/bash
# SPDX-License-Identifier: MIT
# The first cross-domain xway connections: xwayd in Xen mode in each domU
# (root), xtb-vchan's verified TCP transfer + ping-pong with both ends under
# LD_PRELOAD=libxway.so, once from the client domU to a listener in the
# server domU (c2s) and once the other way (s2c: the listener is in the
# client domU), XEN_BYTES each.  Passes when every byte and echo is
# verified and this domain's broker shows both connections with backend
# "xen" and at least XEN_BYTES on the channel (c2s counters).  The NIC
# counters around the workload (domu.sh) are checked by report.py: the
# payload must not cross the bridge.  55-xway-xen-plain is the unshimmed
# counterpart.
set -u
role=$1
mode=${2:-accel}     # 55-xway-xen-plain runs this with "plain"
. "$TB_LIB"
lib=/opt/xway/lib/libxway.so
tb_need "$TB_BIN/xwayd" "$TB_BIN/xwayctl" "$lib"
bytes=${XEN_BYTES:-33554432}
pings=200
tb_xwayd_dir
trap tb_xwayd_end EXIT
tb_xwayd_start
ctl status >&2 || true
# Emulated domUs: broker replies may exceed the shim's default 100 ms (a
# LISTEN_ADD that times out is only retried at the next accept).
export XWAY_BROKER_TIMEOUT_MS=3000
run() { LD_PRELOAD=$lib XWAY_BROKER_SOCK=$sock "$TB_BIN/xtb-vchan" "$@" --timeout "$TB_PROBE_TIMEOUT"; }
# The peer's broker published a listener on PORT in xenstore.
peer_listens() { xenstore-read "/local/xway/$TB_PEER_DOMID/listeners" | grep -Eq ":$1( |\$)"; }
fail=0

# serve NAME PORT: listen on our address, signal the peer, wait for the run.
serve() {
	run server --tcp "$TB_SELF_IP" "$2" > "$d/$1.s" 2> "$d/$1.s.err" &
	local spid=$!
	wait_for 60 sh -c "'$TB_BIN/xwayctl' listeners --json --socket '$sock' | grep -q ':$2\"'" \
		|| { echo "$1: listener never reached the broker" >&2; fail=1; }
	tb_signal "$1/listening"
	wait $spid || { echo "$1: server failed" >&2; fail=1; }
	cat "$d/$1.s.err" >&2
	sed "s/^/$1.server./" "$d/$1.s"
}
# connect NAME PORT [env...]: wait for the peer's listener, run the client.
connect() {
	local name=$1 port=$2; shift 2
	tb_wait "$name/listening" 300 > /dev/null || { echo "$name: peer never listened" >&2; fail=1; return; }
	if [ "$*" = "" ]; then
		wait_for 60 peer_listens "$port" || echo "$name: the peer's listener is not in xenstore" >&2
		sleep 1      # our broker reads it on its watch event
	fi
	env "$@" LD_PRELOAD=$lib XWAY_BROKER_SOCK=$sock "$TB_BIN/xtb-vchan" client --tcp "$TB_PEER_IP" "$port" \
		--bytes "$bytes" --pings "$pings" --timeout "$TB_PROBE_TIMEOUT" > "$d/$name.c" 2> "$d/$name.c.err" \
		|| { echo "$name: client failed" >&2; fail=1; }
	cat "$d/$name.c.err" >&2
	sed "s/^/$name.client./" "$d/$name.c"
}

if [ "$mode" = plain ]; then
	# The client runs without the shim (XWAY_DISABLE=1): it offers
	# nothing, the server's claim finds no offer, plain TCP.
	if [ "$role" = server ]; then
		serve plain 47303
	else
		connect plain 47303 XWAY_DISABLE=1
	fi
elif [ "$role" = server ]; then
	serve c2s 47301
	connect s2c 47302
else
	connect c2s 47301
	serve s2c 47302
fi
tb_barrier xen-done 300 || true
tb_collect_records
cp "$d/conns.json" "${TB_OUT:-/tmp/x}.conns.json" 2> /dev/null
# Records of this broker: backend xen with the whole transfer on the
# channel, and tcp fallbacks with their reason.
tb_accel_summary "$bytes"
xen=$tb_xen; tcp_payload=$tb_tcp_payload
echo "xen.accel_records=$xen"
echo "xen.max_tcp_payload=$tcp_payload"
echo "xen.bytes=$bytes"
[ $fail = 0 ] || { echo "a transfer failed" >&2; exit 1; }
if [ "$mode" = plain ]; then
	noffer=0
	grep -q '"reason":"no-offer"' "$d/conns.json" && noffer=1
	echo "xen.plain_no_offer=$noffer"
	[ $xen = 0 ] || { echo "an unshimmed client's connection was accelerated" >&2; exit 1; }
	if [ "$role" = server ] && [ $noffer != 1 ]; then
		echo "the server's broker has no no-offer record for the unshimmed client" >&2
		cat "$d/conns.json" >&2; exit 1
	fi
	exit 0
fi
[ $xen -ge 2 ] || { echo "expected 2 xen connections with >= $bytes B on the channel, saw $xen" >&2; cat "$d/conns.json" >&2; exit 1; }
exit 0
