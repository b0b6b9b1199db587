#!/bin/bash
# SPDX-License-Identifier: MIT
# apache2 as Debian ships it across the two domUs: in xtb-server its
# unit's command (`APACHE_STARTED_BY_SYSTEMD=true apachectl start`: the
# packaged /etc/apache2, event MPM, workers as www-data, port 80) under
# LD_PRELOAD=libxway.so; in xtb-client curl under the shim.  Files in
# /var/www/html/xtb: a random XTB_WEB_MB file fetched twice on one
# keep-alive connection, 20 small pages on one keep-alive connection and 10
# with `Connection: close`; every body's sha256 compared across the domains
# (hashes exchanged through xenstore).  The xwayd in Xen mode, the verdict
# and its rules are those of 80-xen-ssh (common part in guest/appslib.sh).
set -u
role=$1
app=web
need=(/usr/sbin/apachectl /usr/bin/curl)
mb=${XTB_WEB_MB:-16}
port=80
# TCP fallback reasons this workload accepts, with why (empty: none).
# The connections are accepted by apache2 workers (www-data), unprivileged: the shim
# cannot open /dev/xen/* (no privilege model yet, DESIGN §7), so it does not
# claim (setup-chan, "uid N cannot open /dev/xen/*") and the offer is
# withdrawn ("withdrawn": by the client when the server speaks first, else at
# the claim timeout); both ends on verified plain TCP.
ALLOW="setup-chan withdrawn"
# The common part of the 8x workloads: broker, shim, checks, verdict.
. "${TB_LIB%/*}/appslib.sh"

size=$((mb * 1048576))
www=/var/www/html/xtb
if [ "$role" = server ]; then
	rm -rf "$www"; mkdir -p "$www"
	head -c "$size" /dev/urandom > "$www/big.bin"
	for i in $(seq 1 20); do head -c $((i * 997)) /dev/urandom > "$www/page$i.html"; done
	chmod -R a+rX "$www"
	tb_signal web/big-sha "$(sha "$www/big.bin")"
	tb_signal web/pages-sha "$(cat "$www"/page{1..20}.html | sha256sum | cut -c1-64)"
	# The unit's start (Type=forking): apachectl reads /etc/apache2/envvars
	# and runs `apache2 -k start`, which daemonizes.
	APACHE_STARTED_BY_SYSTEMD=true "${XW[@]}" /usr/sbin/apachectl start > "$d/start.log" 2>&1 \
		|| bad "apachectl start: $(tail -n 3 "$d/start.log" | tr '\n' ' ')"
	wait_for 60 test -s /var/run/apache2/apache2.pid || bad "apache2 wrote no pid file"
	apid=$(cat /var/run/apache2/apache2.pid 2> /dev/null)
	daemon_up apache2 "$apid" $port
	serve_until web/done
	for c in $(ps -o pid= --ppid "$apid"); do
		grep -q libxway.so "/proc/$c/maps" 2> /dev/null || bad "apache2 worker $c runs without libxway.so"
		log "worker $c: user $(ps -o user= -p "$c"), libxway.so mapped"
	done
	cp /var/log/apache2/error.log "$d/apache-error.log" 2> /dev/null
	grep -E '\[(emerg|crit|alert)\]|segfault|exit signal' /var/log/apache2/error.log >&2 \
		&& bad "apache2 logged a crash"
else
	await_peer_listener web/listening $port
	big=$(tb_wait web/big-sha 10); pages=$(tb_wait web/pages-sha 10)
	url=http://$TB_PEER_IP:$port/xtb
	get() { local what=$1; shift; shimmed "$what" "$d/curl.log" curl -sSf --max-time 140 "$@"; }
	n0=$(nic_bytes)
	# The big file twice on one keep-alive connection.
	get "GET big.bin twice (keep-alive)" -w '%{num_connects}\n' -o "$d/big1" "$url/big.bin" \
		-o "$d/big2" "$url/big.bin" > "$d/nconn"
	for f in big1 big2; do check_sha "$d/$f" "$big" "$f"; done
	log "connections made for the two big GETs: $(tr '\n' ' ' < "$d/nconn")"
	urls=(); outs=()
	for i in $(seq 1 20); do urls+=("$url/page$i.html"); outs+=(-o "$d/ka$i"); done
	get "20 pages (keep-alive)" "${outs[@]}" "${urls[@]}"
	[ "$(cat "$d"/ka{1..20} 2> /dev/null | sha256sum | cut -c1-64)" = "$pages" ] \
		&& log "20 keep-alive pages: sha256 ok" || bad "keep-alive pages differ"
	for i in $(seq 1 10); do
		get "page$i (Connection: close)" -H 'Connection: close' -o "$d/nk$i" "$url/page$i.html"
	done
	[ "$(cat "$d"/nk{1..10} "$d"/ka{11..20} 2> /dev/null | sha256sum | cut -c1-64)" = "$pages" ] \
		&& log "10 pages on their own connections: sha256 ok" || bad "pages on their own connections differ"
	client_done
fi
conclude $((2 * size))
