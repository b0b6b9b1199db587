# SPDX-License-Identifier: MIT
# The common part of the apps workloads 80-88, sourced by each after it has
# set role, app, need (the app's files), ALLOW, optionally KNOWN, and its
# own settings: the skip rules, the private xwayd in Xen mode, the shim,
# bounded shimmed runs, sha256 checks, the server's wait for the client,
# the records check and the one verdict both domUs agree on.
# Sourced, not run: its functions and its exits belong to the workload.
#
# The verdict's rules (both domUs agree on it, see finish): data verified,
# then every connection in this domain's broker is either on the Xen
# channel (backend xen, kernel TCP payload of it < 1% + 4 KiB, netfront NIC
# bytes during the transfers < 5% of the payload + 1 MiB) or on TCP with a
# reason listed in the workload's ALLOW, which says why.  A known defect
# (KNOWN: its text; LISTENER_PIDS: the daemon pids whose Xen channel shows
# it) ends in a skip that names it; anything else that goes wrong fails.

# The apps across domains run by default (about 8 emulated minutes for
# 80-83); XEN_TESTBED_APPS=0 skips them.
if [ "${TB_APPS:-1}" = 0 ]; then
	echo "skip: XEN_TESTBED_APPS=0" >&2
	exit 77
fi
. "$TB_LIB"
lib=/opt/xway/lib/libxway.so
for f in "$TB_BIN/xwayd" "$TB_BIN/xwayctl" "$lib" "${need[@]}"; do
	[ -e "$f" ] || { echo "skip: $f missing (guest tree without the app packages?)" >&2; exit 77; }
done
nic=${XTB_NIC:-enX0}
KNOWN=${KNOWN:-}
LISTENER_PIDS=()
KNOWN_HIT=
d=$(mktemp -d /tmp/xtb-$app.XXXXXX)
chmod 0755 "$d"
sock=$d/xwayd.sock
bpid=
err=()          # failures of this side
log() { printf '[%s %s %s] %s\n' "$app" "$role" "$(date +%T)" "$*" >&2; }
bad() { log "FAIL: $*"; err+=("$*"); }

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
# The shim's set-up and lifecycle lines (fork, exec, leaves), kept with the
# results: opened by the first process, inherited by its children (which
# may chroot and drop privileges); an exec'd image that cannot open it
# logs to stderr.
: > "$d/shim.log"
chmod 0666 "$d/shim.log"
XW+=(XWAY_LOG_LEVEL=debug XWAY_LOG_FILE="$d/shim.log")
nic_bytes() {
	echo $(( $(cat "/sys/class/net/$nic/statistics/rx_bytes") + $(cat "/sys/class/net/$nic/statistics/tx_bytes") ))
}
# sha FILE: its sha256 (64 hex digits; empty output for a missing file).
sha() { sha256sum < "$1" 2> /dev/null | cut -c1-64; }
# check_sha FILE WANT WHAT: FILE's sha256 is WANT, else a failure.
check_sha() {
	[ -f "$1" ] && [ "$(sha "$1")" = "$2" ] && log "$3: $(stat -c%s "$1") B, sha256 ok" \
		|| bad "$3: received data differs ($(stat -c%s "$1" 2> /dev/null) B)"
}
# shimmed WHAT LOG CMD...: a client under the shim, bounded (150 s), its
# stderr appended to LOG; not run after an earlier failure of this side.
shimmed() {
	local what=$1 out=$2; shift 2
	[ ${#err[@]} = 0 ] || { log "$what: not run (an earlier step failed)"; return 1; }
	timeout 150 "${XW[@]}" "$@" 2>> "$out" \
		|| { bad "$what failed (exit $?): $(tail -n 2 "$out" | tr '\n' ' ')"; return 1; }
	log "$what: done"
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
# daemon_up NAME PID PORT [SECONDS]: (server) the shimmed daemon NAME runs
# as PID (stopped at exit) with libxway.so mapped, and its listener on PORT
# reached our broker within SECONDS (60).
daemon_up() {
	STOP+=("$2")
	wait_for "${4:-60}" listening "$3" || bad "$1's listener on $3 never reached the broker"
	grep -q libxway.so "/proc/$2/maps" 2> /dev/null || bad "$1 (pid $2) runs without libxway.so"
}
# serve_until NAME: (server) signal $app/listening, then wait for the
# client's NAME; n0 and n1 are the NIC counters around that window, and
# $app/counted tells the client that n1 is read (a client that goes on
# with other traffic waits for it).
serve_until() {
	n0=$(nic_bytes)
	tb_signal "$app/listening"
	tb_wait "$1" 800 > /dev/null || bad "the client never signalled $1"
	n1=$(nic_bytes)
	tb_signal "$app/counted"
}
# client_done: (client) the transfers are over: n1, and the server's
# serve_until $app/done returns.
client_done() {
	n1=$(nic_bytes)
	tb_signal "$app/done"
}
# field REC KEY: a number or string field of one JSON record (first match;
# client fields come before server fields in a record).
num_fields() { echo "$1" | grep -o "\"$2\":[0-9]*" | cut -d: -f2; }
str_field() { echo "$1" | grep -o "\"$2\":\"[^\"]*\"" | head -n1 | cut -d'"' -f4; }
# verdict PAYLOAD NIC_BYTES: this domain's broker records against the rules
# in the header; prints report lines and one log line per connection.
verdict() {
	local payload=$1 nicb=$2 rec st be rs det id cb chan=0 tcp=0 nx=0 nt=0 n=0 v why=""
	sleep 3          # the close REPORTs reach the broker
	ctl connections --json > "$d/conns.json" 2> "$d/conns.err" || { bad "xwayctl connections failed"; return; }
	cp "$d/conns.json" "${TB_OUT:-/tmp/x}.conns.json" 2> /dev/null
	ctl connections >&2 || true
	while IFS= read -r rec; do
		case "$rec" in *'"id":'*) ;; *) continue ;; esac
		n=$((n + 1))
		st=$(str_field "$rec" state); be=$(str_field "$rec" backend)
		rs=$(str_field "$rec" reason); det=$(str_field "$rec" detail)
		id=$(str_field "$rec" id)
		if [ "$be" = xen ]; then
			nx=$((nx + 1)); cb=0
			# KNOWN defect signature: a Xen channel attached by a
			# daemon's listener process (it then forks/clones or
			# re-execs the session, which cannot use the channel).
			v=$(echo "$rec" | grep -o '"server":{[^}]*"pid":[0-9]*' | grep -o '[0-9]*$')
			[ -n "$KNOWN" ] && [ -n "$v" ] && [[ " ${LISTENER_PIDS[*]:-} " == *" $v "* ]] && KNOWN_HIT=$KNOWN
			for v in $(num_fields "$rec" bytes_c2s) $(num_fields "$rec" bytes_s2c); do cb=$((cb + v)); done
			chan=$((chan + cb))
			for v in $(num_fields "$rec" tcp_bytes_sent) $(num_fields "$rec" tcp_bytes_received); do tcp=$((tcp + v)); done
			log "connection $id: xen ($st), $cb B on the channel"
		else
			nt=$((nt + 1))
			case " $ALLOW " in
			*" $rs "*) why="$why $rs"; log "connection $id: tcp ($st), reason '$rs' (accepted: ALLOW)" ;;
			*) bad "connection $id on TCP ($st, reason '$rs': $det), not an accepted reason" ;;
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
		echo "report.$app.$role=$nx/$n on Xen ($chan B on the channel), $nt on TCP (documented reasons:$why), netfront $nicb B for $payload B payload"
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
# conclude PAYLOAD: both domUs at the end barrier, then this side's
# verdict over the window n0..n1, then the agreed one.
conclude() {
	tb_barrier "$app/end" 600 || bad "barrier $app/end"
	verdict "$1" $((n1 - n0))
	finish
}
