#!/bin/bash
# SPDX-License-Identifier: MIT
# dom0's part of the test bed: start the Xen daemons, make the bridge,
# create the two PV domUs paused, prepare their xenstore areas (the barrier
# directory each peer may read, and the vchan directory the server owns and
# the client may read), unpause them, wait for both to finish (bounded),
# copy their console logs to our console, and power off.
set -u
. /opt/xway-testbed/guest/tblib.sh
. /opt/xway-testbed/config
TB_ROLE=dom0
out=/var/lib/xway-testbed
mkdir -p "$out"
status() { echo "$1" > "$out/dom0.status"; say "status: $1"; }
interactive=$(cmdline xway.interactive || echo 0)

finish() {
	local f
	for f in /var/log/xen/console/guest-xtb-*.log; do
		[ -e "$f" ] || continue
		say "---- console of ${f##*/guest-}"
		# Strip carriage returns: the serial log is read as text.
		tr -d '\r' < "$f" | sed 's/^/    | /'
	done
	say "---- end of domU consoles"
	sync
	if [ "$interactive" = 1 ]; then
		say "interactive: staying up (xl list, xl console xtb-server, poweroff)"
		exit 0
	fi
	systemctl --no-block poweroff
	exit 0
}

status starting
say "loading backend modules"
for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-netback xen-blkback bridge; do
	modprobe "$m" || say "modprobe $m failed"
done
if ! wait_for 5 xenstore-read /local/domain/0/name; then
	say "xenstored not up: /etc/init.d/xen start"
	/etc/init.d/xen start
fi
wait_for 60 xenstore-read /local/domain/0/name || { status "xenstored-down"; finish; }
pidof xenconsoled > /dev/null || /etc/init.d/xen start
xl info | grep -E '^(xen_version|xen_caps|nr_cpus|total_memory|free_memory)' \
	| sed 's/^/    /'

say "bridge xenbr0"
ip link add xenbr0 type bridge && ip link set xenbr0 up || { status "bridge-failed"; finish; }

kver=$(ls /lib/modules | sort -V | tail -n1)
mkcfg() { # name role ip peer_ip mac disk
	cat > "/run/xtb-$1.cfg" <<CFG
name = "xtb-$1"
type = "pv"
kernel = "/boot/vmlinuz-$kver"
ramdisk = "/boot/initrd.img-$kver"
extra = "root=/dev/xvda rw console=hvc0 loglevel=4 xway.role=$2 xway.ip=$3 xway.peer_ip=$4 xway.interactive=$interactive"
memory = 512
vcpus = 1
# Workload 72 holds 1000 xway channels at once: each takes one event
# channel in both domUs, and the default (1023 per domain, kernel ones
# included) would be the first wall just below 1000 (docs/XEN.md §5).
max_event_channels = 4096
disk = [ 'phy:$6,xvda,w' ]
vif = [ 'bridge=xenbr0,mac=$5' ]
on_poweroff = "destroy"
on_crash = "destroy"
CFG
}
mkcfg server server "$TB_SRV_IP" "$TB_CLI_IP" 00:16:3e:78:74:01 /dev/vdb
mkcfg client client "$TB_CLI_IP" "$TB_SRV_IP" 00:16:3e:78:74:02 /dev/vdc

t0=$(date +%s)
for r in server client; do
	say "xl create -p xtb-$r"
	if ! timeout 300 xl create -p "/run/xtb-$r.cfg"; then
		status "create-$r-failed"; finish
	fi
done
srv=$(xl domid xtb-server); cli=$(xl domid xtb-client)
say "created in $(( $(date +%s) - t0 ))s: server domid $srv, client domid $cli"

# Each domU's barrier area: its own, readable by the peer.  The first
# permission entry names the owner (full access); "r<peer>" lets the peer
# read; everyone else gets nothing.
for pair in "$srv $cli" "$cli $srv"; do
	set -- $pair
	base=/local/domain/$1/data/xway-testbed
	xenstore-write "$base/self-domid" "$1" "$base/peer-domid" "$2" \
		"$base/server-domid" "$srv" "$base/client-domid" "$cli"
	xenstore-chmod -r "$base" "n$1" "r$2"
done
# The vchan directory: libxenvchan's server writes its ring-ref and
# event-channel under /local/domain/<srv>/data/vchan/<cli>/<name>; the
# client must be able to read them.
xenstore-write "/local/domain/$srv/data/vchan/$cli" ""
xenstore-chmod -r "/local/domain/$srv/data/vchan" "n$srv" "r$cli"
# xway's cross-domain connections: the connecting side's shim is the vchan
# server, under its own domain's data/vchan/<peer> (both directions), and
# the two brokers find each other under /local/xway (xway-xen-setup).
xenstore-write "/local/domain/$cli/data/vchan/$srv" ""
xenstore-chmod -r "/local/domain/$cli/data/vchan" "n$cli" "r$srv"
if [ -x /opt/xway/bin/xway-xen-setup ]; then
	/opt/xway/bin/xway-xen-setup add "$srv" "$cli" || say "xway-xen-setup add failed"
	# What xway-xen-setup.service runs in dom0: a destroyed domain's entry
	# goes at the next @releaseDomain (90-xway-xen-vanish relies on it).
	/opt/xway/bin/xway-xen-setup watch 2>&1 | while IFS= read -r l; do say "xen-setup: $l"; done &
	watcher=$!
fi

xl unpause xtb-server && xl unpause xtb-client || { status "unpause-failed"; finish; }
status running
say "domUs unpaused; waiting up to ${TB_DOMU_TIMEOUT}s for them to finish"
[ "$interactive" = 1 ] && finish

# relay: copy the domUs' progress lines to our console as they appear, so
# the host sees them live (the full consoles follow at the end).
declare -A seen
relay() {
	local f n
	for f in /var/log/xen/console/guest-xtb-*.log; do
		[ -e "$f" ] || continue
		n=$(wc -l < "$f")
		if [ "$n" -gt "${seen[$f]:-0}" ]; then
			sed -n "$(( ${seen[$f]:-0} + 1 )),${n}p" "$f" | tr -d '\r' \
				| grep -a '\[xtb ' | sed 's/^.*\(\[xtb \)/\1/'
			seen[$f]=$n
		fi
	done
}

# The domUs power themselves off when their workloads are done.
i=0
destroyed=0
while xl domid xtb-server > /dev/null 2>&1 || xl domid xtb-client > /dev/null 2>&1; do
	relay
	# Workload 90-xway-xen-vanish: the server domU asks us to destroy the
	# client domU mid-transfer, as an operator's `xl destroy` would, and
	# leaves the removal of its xway entry to the `xway-xen-setup watch`
	# started above, as xway-xen-setup.service does on a real host.
	if [ $destroyed = 0 ] && xenstore-read "/local/domain/$srv/data/xway-testbed/destroy-client" \
			> /dev/null 2>&1; then
		destroyed=1
		say "destroying xtb-client (domid $cli) on the server domU's request"
		xl destroy xtb-client || say "xl destroy failed"
		# The watcher removes the entry (at @releaseDomain or within 10 s).
		# If it has not after 40 s, say what dom0 sees, remove the entry
		# by hand so the brokers' half is still tested, and tell the
		# server domU (its workload reports it).
		for _ in $(seq 40); do
			xenstore-read "/local/xway/$cli/instance" > /dev/null 2>&1 || break
			sleep 1
		done
		if xenstore-read "/local/xway/$cli/instance" > /dev/null 2>&1; then
			say "xway-xen-setup watch did not remove /local/xway/$cli within 40 s:" \
			    "watcher alive: $(kill -0 "${watcher:-0}" 2> /dev/null && echo yes || echo no);" \
			    "/local/domain/$cli/domid: $(xenstore-read "/local/domain/$cli/domid" 2>&1);" \
			    "xl list: $(xl list 2>&1 | tail -n +2 | awk '{print $1 "/" $2}' | tr '\n' ' ')"
			/opt/xway/bin/xway-xen-setup remove "$cli" || say "xway-xen-setup remove failed"
			xenstore-write "/local/domain/$srv/data/xway-testbed/watch-missed" 1
		else
			xenstore-write "/local/domain/$srv/data/xway-testbed/watch-missed" 0
		fi
		xenstore-write "/local/domain/$srv/data/xway-testbed/client-destroyed" 1
	fi
	i=$((i + 5))
	if [ $i -gt "$TB_DOMU_TIMEOUT" ]; then
		say "timeout: destroying the domUs"
		xl destroy xtb-server 2> /dev/null; xl destroy xtb-client 2> /dev/null
		status "domU-timeout"
		finish
	fi
	sleep 5
done
relay
status finished
say "both domUs finished after $(( $(date +%s) - t0 ))s"
finish
