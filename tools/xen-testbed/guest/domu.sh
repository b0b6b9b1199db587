#!/bin/bash
# SPDX-License-Identifier: MIT
# A domU's part of the test bed: load the Xen frontend drivers, bring up
# the netfront NIC with the static address from the kernel command line,
# learn the peer's domid from xenstore, then run every workload in
# /opt/xway-testbed/workloads/ in name order, each between two barriers so
# both domUs run the same workload at the same time.  Around each workload
# it records the NIC's and the kernel TCP stack's counters, so the report
# can show which bytes crossed the bridge.  Results go to
# /var/lib/xway-testbed/results/<workload>.<role> (key=value lines) and
# .log (stderr); the host reads them from the disk image afterwards.
set -u
. /opt/xway-testbed/guest/tblib.sh
set -a; . /opt/xway-testbed/config; set +a   # the workloads read these
res=/var/lib/xway-testbed/results
mkdir -p "$res"
TB_SELF_IP=$(cmdline xway.ip)
TB_PEER_IP=$(cmdline xway.peer_ip)
interactive=$(cmdline xway.interactive || echo 0)
nic=enX0

finish() {
	echo "$1" > "$res/domu.status"
	say "status: $1"
	sync
	[ "$interactive" = 1 ] && exit 0
	systemctl --no-block poweroff
	exit 0
}

say "frontend drivers"
for m in xen-netfront xen-gntdev xen-gntalloc xen-evtchn; do
	modprobe "$m" || say "modprobe $m failed"
done
for d in /dev/xen/gntalloc /dev/xen/gntdev /dev/xen/evtchn /dev/xen/xenbus \
	 /sys/class/net/$nic; do
	wait_for 60 test -e "$d" || finish "missing-$d"
done
ip link set lo up
ip addr add "$TB_SELF_IP/24" dev $nic && ip link set $nic up || finish "network-failed"

TB_SELF_DOMID=$(xenstore-read domid) || finish "no-domid"
base=/local/domain/$TB_SELF_DOMID/data/xway-testbed
TB_PEER_DOMID=$(xenstore-read "$base/peer-domid") || finish "no-peer-domid"
TB_SRV_DOMID=$(xenstore-read "$base/server-domid")
TB_CLI_DOMID=$(xenstore-read "$base/client-domid")
if [ "$TB_ROLE" = server ]; then TB_SRV_IP=$TB_SELF_IP; else TB_SRV_IP=$TB_PEER_IP; fi
export TB_ROLE TB_SELF_IP TB_PEER_IP TB_SRV_IP TB_SELF_DOMID TB_PEER_DOMID \
	TB_SRV_DOMID TB_CLI_DOMID
export TB_BIN=/opt/xway/bin TB_LIB=/opt/xway-testbed/guest/tblib.sh
# Where the server's vchans live; dom0 gave the client read access.
export TB_VCHAN_DIR=/local/domain/$TB_SRV_DOMID/data/vchan/$TB_CLI_DOMID
export LD_LIBRARY_PATH=/opt/xway/lib
say "domid $TB_SELF_DOMID, peer $TB_PEER_DOMID, $nic $TB_SELF_IP"
{
	echo "kernel=$(uname -r)"
	echo "domid=$TB_SELF_DOMID"
	echo "xen_version=$(cat /sys/hypervisor/version/major).$(cat /sys/hypervisor/version/minor)$(cat /sys/hypervisor/version/extra)"
} > "$res/domu.info"
[ "$interactive" = 1 ] && finish interactive

# counters PREFIX: NIC and TCP counters as key=value lines.
counters() {
	local c
	for c in rx_bytes tx_bytes rx_packets tx_packets; do
		echo "$1$c=$(cat /sys/class/net/$nic/statistics/$c)"
	done
	awk -v p="$1" '/^Tcp:/ { if (!h) { for (i = 2; i <= NF; i++) k[i] = $i; h = 1 }
		else for (i = 2; i <= NF; i++) if (k[i] == "InSegs" || k[i] == "OutSegs")
			print p "tcp_" k[i] "=" $i }' /proc/net/snmp
}

tb_barrier setup "$TB_BARRIER_TIMEOUT" || finish "peer-never-came"
say "peer is up"
for w in /opt/xway-testbed/workloads/*.sh; do
	name=$(basename "$w" .sh)
	out=$res/$name.$TB_ROLE
	if ! tb_barrier "$name/start" "$TB_BARRIER_TIMEOUT"; then
		echo "status=fail" > "$out"; echo "peer never started $name" > "$out.log"
		finish "barrier-$name"
	fi
	say "workload $name: start"
	counters before_ > "$out.counters"
	t0=$(date +%s%N)
	TB_OUT=$out timeout "$TB_WORKLOAD_TIMEOUT" bash "$w" "$TB_ROLE" > "$out" 2> "$out.log"
	rc=$?
	t1=$(date +%s%N)
	counters after_ >> "$out.counters"
	case $rc in 0) st=pass ;; 77) st=skip ;; 124) st=timeout ;; *) st=fail ;; esac
	{
		echo "status=$st"
		echo "exit_code=$rc"
		echo "wall_seconds=$(( (t1 - t0) / 1000000000 ))"
		cat "$out.counters"
	} >> "$out"
	say "workload $name: $st (exit $rc)"
	if [ $st != pass ]; then
		tail -n 8 "$out.log" | while IFS= read -r l; do say "  > $l"; done
	fi
	# dom0 destroyed the peer on our request (90-xway-xen-vanish, the
	# last workload): nobody is left to meet at the barrier.
	if xenstore-read "/local/domain/$TB_SELF_DOMID/data/xway-testbed/client-destroyed" \
			> /dev/null 2>&1; then
		say "the peer was destroyed; no more workloads"
		break
	fi
	# The peer may still be tearing down: wait so that its traffic does not
	# count in our next workload's counters.
	tb_barrier "$name/end" "$TB_BARRIER_TIMEOUT" || finish "barrier-$name-end"
done
finish done
