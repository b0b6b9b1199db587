# SPDX-License-Identifier: MIT
# The common part of the apps workloads 80-83 (sourced by each, after it
# has set role, app and its own settings): the private xwayd in Xen mode,
# the shim, the records check and the one verdict both domUs agree on.
# Sourced, not run: its functions and its exits belong to the workload.
stop_tree() { # stop_tree PID: PID and its descendants, TERM then KILL (bounded)
	local p=$1 kids k i
	[ -n "$p" ] || return 0
	kids=$(ps -o pid= --ppid "$p" 2> /dev/null)
	kill -TERM "$p" 2> /dev/null
	for k in $kids; do stop_tree "$k"; done
	for ((i = 0; i < 50; i++)); do kill -0 "$p" 2> /dev/null || return 0; sleep 0.1; done
	kill -KILL "$p" 2> /dev/null
	return 0
}
STOP=()         # pids (daemons and their workers) stopped at exit
cleanup() {
	local p
	for p in "${STOP[@]}"; do stop_tree "$p"; done
	[ -n "$bpid" ] && stop_tree "$bpid"
	for f in "$d"/*.log; do [ -f "$f" ] && cp "$f" "${TB_OUT:-/tmp/x}.${f##*/}" 2> /dev/null; done
	rm -rf "$d"
}
trap cleanup EXIT
printf '[broker]\nmode=xen\nlog_level=7\n' > "$d/xwayd.conf"
"$TB_BIN/xwayd" --foreground --config "$d/xwayd.conf" --socket "$sock" > "$d/xwayd.log" 2>&1 &
bpid=$!
wait_for 60 test -S "$sock" || { echo "xwayd did not start" >&2; cat "$d/xwayd.log" >&2; exit 1; }
# Daemons drop privileges: their workers must reach the broker too.
chmod 0666 "$sock"
ctl() { "$TB_BIN/xwayctl" "$@" --socket "$sock"; }
ctl status --json | grep -q '"mode":"xen"' || { echo "xwayd is not in Xen mode" >&2; exit 1; }
# Emulated domUs: broker replies may take longer than the shim's 100 ms.
XW=(env LD_PRELOAD="$lib" XWAY_BROKER_SOCK="$sock" XWAY_BROKER_TIMEOUT_MS=3000)
nic_bytes() {
	echo $(( $(cat "/sys/class/net/$nic/statistics/rx_bytes") + $(cat "/sys/class/net/$nic/statistics/tx_bytes") ))
}
# listening PORT: our broker has a listener on PORT (published to xenstore).
listening() { ctl listeners --json 2> /dev/null | grep -q ":$1\""; }
# peer_listens PORT: the peer's broker published a listener on PORT.
peer_listens() { xenstore-read "/local/xway/$TB_PEER_DOMID/listeners" 2> /dev/null | grep -Eq ":$1( |\$)"; }
# await_peer_listener NAME PORT: the peer signalled NAME and its listener on
# PORT is in xenstore; a second for our broker's watch to read it.
await_peer_listener() {
	tb_wait "$1" 600 > /dev/null || { bad "the peer never signalled $1"; return 1; }
	wait_for 60 peer_listens "$2" || log "the peer's listener on $2 is not in xenstore (it may stay on TCP)"
	sleep 1
}
# field REC KEY: a number or string field of one JSON record (first match;
# client fields come before server fields in a record).
num_fields() { echo "$1" | grep -o "\"$2\":[0-9]*" | cut -d: -f2; }
str_field() { echo "$1" | grep -o "\"$2\":\"[^\"]*\"" | head -n1 | cut -d'"' -f4; }
# verdict PAYLOAD NIC_BYTES: this domain's broker records against the rules
# in the header; prints report lines.
verdict() {
	local payload=$1 nicb=$2 rec st be rs det chan=0 tcp=0 nx=0 nt=0 n=0 v why=""
	sleep 3          # the close REPORTs reach the broker
	ctl connections --json > "$d/conns.json" 2> "$d/conns.err" || { bad "xwayctl connections failed"; return; }
	cp "$d/conns.json" "${TB_OUT:-/tmp/x}.conns.json" 2> /dev/null
	ctl connections >&2 || true
	while IFS= read -r rec; do
		case "$rec" in *'"id":'*) ;; *) continue ;; esac
		n=$((n + 1))
		st=$(str_field "$rec" state); be=$(str_field "$rec" backend)
		rs=$(str_field "$rec" reason); det=$(str_field "$rec" detail)
		if [ "$be" = xen ]; then
			nx=$((nx + 1))
			# KNOWN defect signature: a Xen channel attached by a
			# daemon's listener process (it then forks/clones or
			# re-execs the session, which cannot use the channel).
			v=$(echo "$rec" | grep -o '"server":{[^}]*"pid":[0-9]*' | grep -o '[0-9]*$')
			[ -n "$KNOWN" ] && [ -n "$v" ] && [[ " ${LISTENER_PIDS[*]:-} " == *" $v "* ]] && KNOWN_HIT=$KNOWN
			for v in $(num_fields "$rec" bytes_c2s) $(num_fields "$rec" bytes_s2c); do chan=$((chan + v)); done
			for v in $(num_fields "$rec" tcp_bytes_sent) $(num_fields "$rec" tcp_bytes_received); do tcp=$((tcp + v)); done
		else
			nt=$((nt + 1))
			case " $ALLOW " in
			*" $rs "*) why="$why $rs" ;;
			*) bad "connection $(str_field "$rec" id) on TCP ($st, reason '$rs': $det), not an accepted reason" ;;
			esac
		fi
	done < <(sed 's/},{"id"/}\n{"id"/g' "$d/conns.json")
	echo "$app.conns=$n"; echo "$app.xen=$nx"; echo "$app.tcp=$nt"
	echo "$app.chan_bytes=$chan"; echo "$app.tcp_payload_of_xen=$tcp"; echo "$app.nic_bytes=$nicb"
	echo "$app.payload=$payload"
	[ "$n" -gt 0 ] || bad "the broker recorded no connection"
	if [ "$nt" = 0 ] && [ "$n" -gt 0 ]; then
		[ "$chan" -ge "$payload" ] || bad "channel bytes $chan < payload $payload"
		[ "$tcp" -le $((chan / 100 + 4096 * nx)) ] || bad "kernel TCP carried $tcp B of accelerated connections"
		[ "$nicb" -le $((payload / 20 + 1048576)) ] || bad "netfront moved $nicb B for a $payload B payload"
		echo "report.$app.$role=$nx/$n connections on the Xen channel, $chan B on it, netfront $nicb B for $payload B payload"
	else
		why=$(echo $why | tr ' ' '\n' | sort | uniq -c | awk '{ printf " %s x%d", $2, $1 }')
		echo "report.$app.$role=$nx/$n on Xen, $nt on TCP (documented reasons:$why), netfront $nicb B for $payload B payload"
	fi
}
# finish: both domUs publish their verdict and exit with the worse one
# (the report requires the same status on both sides).
finish() {
	local mine=pass peer
	[ ${#err[@]} = 0 ] || mine=fail
	# With the known defect's signature seen, its symptoms (failed
	# transfers) are that defect: reported, not a failure of the run.
	[ -n "${KNOWN_HIT:-}" ] && [ ${#err[@]} != 0 ] && mine=known
	tb_signal "$app/verdict" "$mine"
	peer=$(tb_wait "$app/verdict" 600) || peer=fail
	echo "$app.verdict.$role=$mine"; echo "$app.verdict.peer=$peer"
	# The signature is seen on one side (the server's broker); the other
	# side's failures are the same defect's symptoms.
	if [ -n "$KNOWN" ] && { [ "$mine" = known ] || [ "$peer" = known ]; }; then
		[ "$mine" = known ] || KNOWN_HIT="$KNOWN (signature seen by the peer)"
		echo "report.$app.known.$role=KNOWN DEFECT: ${KNOWN_HIT:-seen by the peer} (docs/COMPAT.md, Xen)"
		log "skip: known defect: ${KNOWN_HIT:-seen by the peer}"
		exit 77
	fi
	if [ "$mine" = fail ] || [ "$peer" = fail ]; then
		[ "$mine" = fail ] || log "the peer failed"
		exit 1
	fi
	exit 0
}
