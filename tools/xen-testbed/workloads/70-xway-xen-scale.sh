#!/bin/bash
# SPDX-License-Identifier: MIT
# Scale of cross-domain connections (issues #7.5, #3): xwayd in Xen mode in
# both domUs, xtb-conns (32-byte requests and replies, both verified) with
# both ends under LD_PRELOAD=libxway.so, client domU -> server domU.
#   scale (this file): SCALE_HOLD (200) connections open at once, each
#     exchanging once, then once more while all are open; then a churn of
#     SCALE_CHURN (1000) connections in a row (connect, exchange, close),
#     and the same churn without the shim (kernel TCP) for the setup rate.
#     Passes when every exchange is verified, both brokers record every
#     connection with backend xen (the fallbacks and their reasons are
#     printed otherwise), no broker or shim saw a xenstore or vchan set-up
#     error, and nothing is left behind: xenstore nodes (this domain's
#     data/vchan and /local/xway entry), the broker's descriptors and
#     mappings, the event channels bound from user space, and the
#     application's descriptors, grant mappings and event channels.
#   push (72-xway-xen-push runs this with "push"): SCALE_PUSH (1000) at
#     once.  Every exchange must be verified and every connection either
#     accelerated or on TCP with a recorded reason; the workload reports
#     how many were accelerated and the first wall (reason, detail).
set -u
role=$1
mode=${2:-scale}
# The push to 1000 (72) takes 15-20 emulated minutes: it runs only with
# XEN_TESTBED_SCALE=1 make test-xen, and skips with the reason otherwise.
# The scale mode (200 at once, churn of 1000) runs in every make test-xen.
if [ "$mode" = push ] && [ "${TB_SCALE:-0}" != 1 ]; then
	echo "skip: the push to 1000 connections runs only with XEN_TESTBED_SCALE=1 (15-20 min emulated: docs/XEN.md §5)" >&2
	exit 77
fi
. "$TB_LIB"
lib=/opt/xway/lib/libxway.so
tb_need "$TB_BIN/xwayd" "$TB_BIN/xwayctl" "$TB_BIN/xtb-conns" "$lib"
hold=${SCALE_HOLD:-200}
churn=${SCALE_CHURN:-1000}
# One connection at a time with the domains idle in between: one set-up's
# latency, where the churn measures a share of a saturated vCPU.
paced=${SCALE_PACED:-40}
push=${SCALE_PUSH:-1000}
# The push's 1000 set-ups slow down as connections accumulate (each poll()
# round of the server covers all of them): 1.6/s on average in the
# emulated test bed; the workload's own limit (run.sh) is 1500 s.
if [ "$mode" = push ]; then tmo=${SCALE_TIMEOUT:-1200}; else tmo=${SCALE_TIMEOUT:-600}; fi
tb_xwayd_dir log_level=6
trap 'cp "$d"/*.err "${TB_OUT%/*}/" 2> /dev/null; tb_xwayd_end' EXIT
tb_xwayd_start
export XWAY_BROKER_TIMEOUT_MS=3000
peer_listens() { xenstore-read "/local/xway/$TB_PEER_DOMID/listeners" | grep -Eq ":$1( |\$)"; }
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }

# snap TAG: what this domain holds, as TAG.key=value lines.
snap() {
	local t=$1
	echo "$t.vchan_nodes=$(xenstore-ls "/local/domain/$TB_SELF_DOMID/data/vchan" 2> /dev/null | wc -l)"
	# Nodes with a value (offers, withdraw requests, outcomes); the
	# directories that hold them stay once made.
	echo "$t.xway_nodes=$(xenstore-ls "/local/xway/$TB_SELF_DOMID" 2> /dev/null | grep -c ' = "[^"]')"
	# The vchan ends the broker made ahead (DESIGN §7.3: two descriptors
	# and one event channel each) are held on purpose and bounded: the
	# *_held counts leave them out.
	local pool fds ev
	pool=$(ctl stats --json 2> /dev/null | grep -o '"xen_pool_ready":[0-9]*' | cut -d: -f2)
	pool=${pool:-0}
	fds=$(ls /proc/$bpid/fd | wc -l)
	ev=$(grep -c 'evtchn:' /proc/interrupts)
	echo "$t.pool_ready=$pool"
	echo "$t.broker_fds=$fds"
	echo "$t.broker_fds_held=$((fds - 2 * pool))"
	echo "$t.broker_maps=$(wc -l < /proc/$bpid/maps)"
	echo "$t.user_evtchn=$ev"
	echo "$t.user_evtchn_held=$((ev - pool))"
	echo "$t.mem_avail_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)"
	echo "$t.gntalloc_limit=$(cat /sys/module/xen_gntalloc/parameters/limit 2> /dev/null || echo none)"
	# The broker-to-broker link with the peer (docs/XEN.md §3.1): both
	# ends up, and the records this broker sent on it (offers from the
	# client's broker, outcomes from the server's).
	local lk
	lk=$(ctl peers --json 2> /dev/null)
	echo "$t.link_up=$(echo "$lk" | grep -c '"out":"up","in":"up"')"
	echo "$t.link_sent=$(echo "$lk" | grep -o '"sent":[0-9]*' | head -n1 | cut -d: -f2)"
}
val() { sed -n "s/^$2=//p" "$1" | tail -n1; }

# The broker's records of connections to server port PORT, one a line.
recs() { ctl connections --json | tb_records | grep "\"server\":{\"addr\":\"[^\"]*:$1\""; }
# summary PORT NAME [live]: accelerated xen records and the fallbacks.
summary() {
	local port=$1 name=$2 all
	all=$(recs "$port")
	[ "${3:-}" = live ] && all=$(echo "$all" | grep '"ended":null')
	local xen tcp
	xen=$(echo "$all" | grep -c '"backend":"xen"')
	tcp=$(echo "$all" | grep -c '"backend":"tcp"')
	echo "$name.xen_records=$xen"
	echo "$name.tcp_records=$tcp"
	echo "$all" | grep '"backend":"tcp"' | grep -o '"reason":"[^"]*","detail":"[^"]*"' \
		| sort | uniq -c | sort -rn | head -n 5 | sed "s/^ */$name.fallback: /"
	# A client whose channel set-up failed reports it before it knows
	# its 4-tuple: those records carry no addresses.
	echo "$name.setup_failures=$(ctl connections --json | tb_records \
		| grep '"backend":"tcp"' | grep -c '"reason":"setup-chan"')"
}

# serve NAME PORT COUNT [plain]: an xtb-conns server for COUNT connections
# in the background (its pid in SPID).
serve() {
	local name=$1 port=$2 n=$3 pre="LD_PRELOAD=$lib"
	[ "${4:-}" = plain ] && pre=XWAY_NONE=1
	env $pre XWAY_BROKER_SOCK="$sock" "$TB_BIN/xtb-conns" server --tcp "$TB_SELF_IP" "$port" \
		--conns "$n" --timeout "$tmo" > "$d/$name.s" 2> "$d/$name.s.err" &
	SPID=$!
	if [ "${4:-}" != plain ]; then
		wait_for 60 sh -c "'$TB_BIN/xwayctl' listeners --json --socket '$sock' | grep -q ':$port\"'" \
			|| bad "$name: listener never reached the broker"
	else
		# Listening before the peer is told so (a CI run's plain churn
		# once connected before the server had bound: refused).
		wait_for 60 sh -c "ss -ltn | grep -q ':$port '" || bad "$name: server never listened"
	fi
	tb_signal "$name/listening"
}
# connect NAME PORT COUNT [plain|churn]...: the client, after the listener.
connect() {
	local name=$1 port=$2 n=$3; shift 3
	local pre="LD_PRELOAD=$lib" args=()
	for a in "$@"; do
		case $a in
		plain) pre=XWAY_NONE=1 ;;
		churn) args+=(--churn) ;;
		pace=*) args+=(--pause-ms "${a#pace=}") ;;
		*) args+=("$a") ;;
		esac
	done
	tb_wait "$name/listening" 300 > /dev/null || { bad "$name: peer never listened"; return 1; }
	if [ "$pre" != XWAY_NONE=1 ]; then
		wait_for 60 peer_listens "$port" || echo "$name: the peer's listener is not in xenstore" >&2
		sleep 1      # our broker reads it on its watch event
	fi
	env $pre XWAY_BROKER_SOCK="$sock" "$TB_BIN/xtb-conns" client --tcp "$TB_PEER_IP" "$port" \
		--conns "$n" --timeout "$tmo" "${args[@]}" > "$d/$name.c" 2> "$d/$name.c.err"
}

# hold NAME PORT COUNT: COUNT open at once; both brokers' live records are
# taken while they are, then the second exchange and the close.
hold() {
	local name=$1 port=$2 n=$3 spid cpid
	if [ "$role" = server ]; then
		serve "$name" "$port" "$n"; spid=$SPID
		tb_wait "$name/open" $((tmo + 60)) > /dev/null || bad "$name: the client never opened them all"
		summary "$port" "$name.server" live > "$d/$name.srec"
		snap "$name.server.open" >> "$d/$name.srec"
		tb_signal "$name/checked"
		finish_server "$name" "$spid"
		cat "$d/$name.srec" "$d/$name.s"
	else
		connect "$name" "$port" "$n" --ready "$d/$name.ready" --go "$d/$name.go" &
		cpid=$!
		wait_for $((tmo + 60)) sh -c "test -e '$d/$name.ready' || ! kill -0 $cpid" \
			|| bad "$name: the client never opened them all"
		[ -e "$d/$name.ready" ] || bad "$name: the client ended before opening them all"
		summary "$port" "$name.client" live > "$d/$name.crec"
		snap "$name.client.open" >> "$d/$name.crec"
		tb_signal "$name/open"
		tb_wait "$name/checked" 300 > /dev/null || bad "$name: the server never checked"
		touch "$d/$name.go"
		wait "$cpid" || bad "$name: client failed"
		tb_signal "$name/done"
		cat "$d/$name.crec" "$d/$name.c"
	fi
}

# finish_server NAME PID: the server ends by itself once every connection
# closed; a client that failed early leaves it waiting: end it then.
finish_server() {
	tb_wait "$1/done" $((tmo + 60)) > /dev/null || true
	wait_for 30 sh -c "! kill -0 $2" || { kill "$2" 2> /dev/null; bad "$1: server still waiting for connections"; }
	wait "$2" || bad "$1: server failed"
}

# run_churn NAME PORT COUNT [plain|""] [pace=MS]
run_churn() {
	local name=$1 port=$2 n=$3 plain=${4:-} pace=${5:-} spid
	if [ "$role" = server ]; then
		serve "$name" "$port" "$n" "$plain"; spid=$SPID
		finish_server "$name" "$spid"
		cat "$d/$name.s"
	else
		connect "$name" "$port" "$n" churn $plain $pace || bad "$name: client failed"
		tb_signal "$name/done"
		cat "$d/$name.c"
	fi
}

# prof_churn PORT COUNT (XEN_TESTBED_PROFILE=1): a churn with both the
# application and this domain's broker under strace -f -T -tt, for where
# a connection's system calls and their time go (raw/<role>/prof.*).
prof_churn() {
	local port=$1 n=$2 st pid out="${TB_OUT%/*}"
	command -v strace > /dev/null || { echo "prof: no strace in the guest" >&2; return; }
	strace -f -T -tt -p "$bpid" -o "$out/prof.broker.strace" 2> /dev/null &
	st=$!
	sleep 2
	if [ "$role" = server ]; then
		strace -f -T -tt -o "$out/prof.app.strace" env LD_PRELOAD=$lib XWAY_BROKER_SOCK="$sock" \
			"$TB_BIN/xtb-conns" server --tcp "$TB_SELF_IP" "$port" --conns "$n" \
			--timeout "$tmo" > "$d/prof.s" 2> "$d/prof.s.err" &
		pid=$!
		wait_for 60 sh -c "'$TB_BIN/xwayctl' listeners --json --socket '$sock' | grep -q ':$port\"'" || true
		tb_signal prof/listening
		wait "$pid" || echo "prof: server failed" >&2
	else
		tb_wait prof/listening 300 > /dev/null || true
		wait_for 60 peer_listens "$port" || true
		sleep 1
		strace -f -T -tt -o "$out/prof.app.strace" env LD_PRELOAD=$lib XWAY_BROKER_SOCK="$sock" \
			"$TB_BIN/xtb-conns" client --tcp "$TB_PEER_IP" "$port" --conns "$n" \
			--timeout "$tmo" --churn > "$d/prof.c" 2> "$d/prof.c.err" || echo "prof: client failed" >&2
	fi
	kill "$st" 2> /dev/null; wait "$st" 2> /dev/null
	tb_barrier prof-done $((tmo + 120)) || true
}

r=$d/results
: > "$r"
# The broker links up in both directions first: they hold descriptors,
# event channels and an advertisement node for as long as both brokers run.
wait_for 120 sh -c "'$TB_BIN/xwayctl' peers --json --socket '$sock' | grep -q '\"out\":\"up\",\"in\":\"up\"'" \
	|| bad "the broker link with domain $TB_PEER_DOMID did not come up"
snap before >> "$r"
if [ "$mode" = push ]; then
	hold push 47372 "$push" >> "$r"
	tb_barrier push-done $((tmo + 120)) || true
	sleep 3
	summary 47372 push.all >> "$r"
	# The wall, made on purpose: the client domU's gntalloc limit set
	# to room for WALL_FIT channels of 64 KiB rings (plus 5 pages), then
	# WALL_CONNS at once.  The first ones get channels (one more with
	# 4 KiB rings), the rest must be on TCP with their reason recorded,
	# and every exchange verified.
	fit=${WALL_FIT:-10}; wall=${WALL_CONNS:-40}
	gl=/sys/module/xen_gntalloc/parameters/limit
	if [ "$role" = client ]; then
		old_limit=$(cat $gl)
		echo $((fit * 33 + 5)) > $gl || bad "cannot lower the gntalloc limit"
	fi
	tb_barrier wall-limit 300 || true
	hold wall 47374 "$wall" >> "$r"
	[ "$role" = client ] && echo "$old_limit" > $gl
	tb_barrier wall-done $((tmo + 120)) || true
	sleep 3
	summary 47374 wall.all >> "$r"
else
	hold hold 47370 "$hold" >> "$r"
	tb_barrier hold-done $((tmo + 120)) || true
	sleep 3
	snap mid >> "$r"     # the broker has seen connections: its own
	                     # start-up allocations are done
	run_churn churn 47371 "$churn" >> "$r"
	tb_barrier churn-done $((tmo + 120)) || true
	run_churn plain 47373 "$churn" plain >> "$r"
	tb_barrier plain-done $((tmo + 120)) || true
	run_churn paced 47376 "$paced" "" pace=100 >> "$r"
	tb_barrier paced-done $((tmo + 120)) || true
	run_churn pacedtcp 47377 "$paced" plain pace=100 >> "$r"
	tb_barrier pacedtcp-done $((tmo + 120)) || true
	[ "${TB_PROFILE:-0}" = 1 ] && prof_churn 47375 "${PROFILE_CONNS:-30}"
	sleep 3          # the REPORTs of the last closes reach the broker
	summary 47370 hold.all >> "$r"
	summary 47371 churn.all >> "$r"
	summary 47376 paced.all >> "$r"
fi
# Our vchan nodes go with the broker's collection pass (every 5 s, two
# passes): bounded wait for them, then the snapshot.
nodes0=$(val "$r" before.vchan_nodes)
wait_for 60 sh -c "[ \$(xenstore-ls /local/domain/$TB_SELF_DOMID/data/vchan 2> /dev/null | wc -l) -le $nodes0 ]" || true
snap after >> "$r"
# Both snapshots before either broker stops: the broker links, their
# advertisement, descriptors and event channels live as long as the peer's
# broker (a server that finished first used to end its broker under the
# client's snapshot).
tb_barrier after-snap 300 || true
grep -c "xenstore: cannot" "$d/xwayd.log" | sed 's/^/xs_errors.broker=/' >> "$r"
cat "$d"/*.err 2> /dev/null | grep -c -i "libxenvchan\|xenstore" | sed 's/^/xs_errors.shim=/' >> "$r"
cat "$r"
cat "$d"/*.err >&2 2> /dev/null
ctl stats >&2 || true
tail -n 30 "$d/xwayd.log" >&2

# ---- verdict ------------------------------------------------------------
side=server; [ "$role" = client ] && side=client
check_exchanges() { # NAME COUNT
	if [ "$role" = client ]; then
		[ "$(sed -n "s/^client.opened=//p" "$d/$1.c" | tail -n1)" = "$2" ] || bad "$1: not all $2 connections opened"
		[ "$(sed -n "s/^client.bad=//p" "$d/$1.c" | tail -n1)" = 0 ] || bad "$1: client saw bad exchanges"
	else
		[ "$(sed -n "s/^server.accepted=//p" "$d/$1.s" | tail -n1)" = "$2" ] || bad "$1: server did not accept $2"
		[ "$(sed -n "s/^server.bad=//p" "$d/$1.s" | tail -n1)" = 0 ] || bad "$1: server saw bad requests"
	fi
}
leak() { # KEY [FROM]: the same at FROM (before) and after
	local b a
	b=$(val "$r" "${2:-before}.$1"); a=$(val "$r" "after.$1")
	[ "$b" = "$a" ] || bad "leak: $1 was $b at ${2:-before}, $a after"
}
if [ "$mode" = push ]; then
	check_exchanges push "$push"
	x=$(val "$r" push.all.xen_records); t=$(val "$r" push.all.tcp_records)
	# The client's broker merges set-up failures reported without
	# addresses into one record: the shim's own line per failed
	# connection counts them.
	fails() { grep -c 'libxenvchan_server_init(.*) failed' "$d/$1.c.err"; }
	[ "$role" = client ] && f=$(fails push) && t=$((t + f))
	[ $((x + t)) -ge "$push" ] || bad "push: $x xen + $t tcp records for $push connections"
	if [ "$t" -gt 0 ] && ! grep -q '^push.all.fallback: ' "$r"; then
		bad "push: fallbacks without a reason"
	fi
	first=$(recs 47372 | grep -m1 '"backend":"tcp"' | grep -o '"reason":"[^"]*","detail":"[^"]*"')
	check_exchanges wall "$wall"
	wx=$(val "$r" wall.all.xen_records); wt=$(val "$r" wall.all.tcp_records)
	# The client's broker records each refused grant with its reason
	# now; older brokers merged them (then the shim's lines count).
	if [ "$role" = client ]; then
		wf=$(fails wall)
		[ "${wf:-0}" -gt "${wt:-0}" ] && wt=$wf
	fi
	[ "$wx" -ge 1 ] || bad "wall: no connection accelerated below the limit"
	[ "$wx" -lt "$wall" ] || bad "wall: all $wall accelerated: the limit did not bite"
	[ $((wx + wt)) -ge "$wall" ] || bad "wall: $wx xen + $wt tcp-with-reason records for $wall connections"
	echo "report.scale_wall_$side=gntalloc limit $((fit * 33 + 5)) pages in the client domU: $wx of $wall accelerated, $wt on TCP with a recorded reason, every exchange verified"
	[ "$role" = client ] && [ -z "$first" ] && [ "${f:-0}" -gt 0 ] && first="setup-chan ($f channel set-ups failed: $(sort "$d/push.c.err" | uniq -c | sort -rn | head -n 2 | tr -s ' \n' ' '))"
	echo "report.scale_push_$side=$x of $push concurrent accelerated (live: $(val "$r" push.$side.xen_records)), $t on TCP; first fallback: ${first:-none}; vchan nodes while open: $(val "$r" push.$side.open.vchan_nodes), user event channels: $(val "$r" push.$side.open.user_evtchn)"
else
	check_exchanges hold "$hold"
	check_exchanges churn "$churn"
	check_exchanges plain "$churn"
	check_exchanges paced "$paced"
	check_exchanges pacedtcp "$paced"
	[ "$(val "$r" paced.all.xen_records)" -ge "$paced" ] || bad "paced: only $(val "$r" paced.all.xen_records) xen records of $paced"
	[ "$(val "$r" hold.$side.xen_records)" -ge "$hold" ] || bad "hold: only $(val "$r" hold.$side.xen_records) live xen records of $hold"
	[ "$(val "$r" churn.all.xen_records)" -ge "$churn" ] || bad "churn: only $(val "$r" churn.all.xen_records) xen records of $churn"
	[ "$(val "$r" churn.all.tcp_records)" = 0 ] || bad "churn: fallbacks"
	[ "$(val "$r" xs_errors.broker)" = 0 ] || bad "the broker saw xenstore errors"
	[ "$(val "$r" xs_errors.shim)" = 0 ] || bad "the shims saw xenstore/libxenvchan errors"
	for k in vchan_nodes xway_nodes user_evtchn_held; do leak "$k"; done
	# The broker's descriptors after the churn's connections as after
	# the first 200 (its mappings are reported: heap growth for the
	# finished records is not a leak).
	leak broker_fds_held mid
	# The churn's offers and outcomes went on the broker link, not
	# through xenstore.
	[ "$(val "$r" after.link_up)" = 1 ] || bad "the broker link with domain $TB_PEER_DOMID is not up"
	ls=$(( $(val "$r" after.link_sent) - $(val "$r" mid.link_sent) ))
	[ "$ls" -ge "$churn" ] || bad "churn: only $ls records sent on the broker link for $churn connections"
	echo "report.scale_link_$side=broker link up; $ls records sent on it during the churn of $churn"
	# Where the brokers' share of a set-up goes (all connections of the run).
	st=$(ctl stats --json 2> /dev/null)
	sv() { echo "$st" | grep -o "\"$1\":[0-9]*" | cut -d: -f2; }
	avg() { local n; n=$(sv "$1"); [ "${n:-0}" -gt 0 ] && awk -v t="$(sv "$2")" -v n="$n" 'BEGIN { printf "%.2f ms", t / n / 1000 }' || echo n/a; }
	echo "report.scale_broker_$side=vchan ends served $(sv xen_serves) (avg $(avg xen_serves xen_serve_us); $(sv xen_serves_pooled) made ahead, $(sv xen_pool_ready) kept), attached $(sv xen_attaches) (avg $(avg xen_attaches xen_attach_us); $(sv xen_attaches_early) when the offer came); offer to decision avg $(avg xen_decided xen_decide_us)"
	# The client's shim offers with backend xen at once once its broker
	# said where the listener is: one OFFER per connection, not two.
	if [ "$role" = client ]; then
		no=$(sv offers)
		[ "${no:-0}" -le $(( (hold + churn + paced) * 11 / 10 )) ] || bad "$no OFFERs for $((hold + churn + paced)) connections: the shim's Xen-destination cache is not used"
	fi
	if [ "$role" = client ]; then
		for ph in hold churn; do
			for k in grant_maps evtchn fds; do
				b=$(sed -n "s/^client.before.$k=//p" "$d/$ph.c"); a=$(sed -n "s/^client.after.$k=//p" "$d/$ph.c")
				# fds: +1 is the shim's broker link, opened at the first connect.
				[ "$k" = fds ] && [ -n "$b" ] && b=$((b + 1))
				[ "$b" = "$a" ] || bad "leak in the application ($ph): $k $b expected, $a after"
			done
			# The shim keeps at most 16 unused endpoint states for
			# the next connections (shim/chan/local.c spares): more
			# would be a leak of them.
			sp=$(sed -n "s/^client.after.ep_memfds=//p" "$d/$ph.c")
			[ "${sp:-0}" -le 16 ] || bad "leak in the application ($ph): $sp endpoint state memfds kept (16 at most)"
			echo "report.scale_spares_$ph=$ph: ${sp:-?} spare endpoint states kept by the client (16 at most)"
		done
		xr=$(sed -n 's/^client.setup_rate=//p' "$d/churn.c"); pr=$(sed -n 's/^client.setup_rate=//p' "$d/plain.c")
		echo "report.scale_setup_rate=churn of $churn: xway $xr conn/s, kernel TCP $pr conn/s (emulated; connect+exchange+close)"
		ph() { printf 'connect %s, first exchange %s, close %s' "$(sed -n 's/^client.avg_connect_ms=//p' "$d/$1.c")" \
			"$(sed -n 's/^client.avg_exchange_ms=//p' "$d/$1.c")" "$(sed -n 's/^client.avg_close_ms=//p' "$d/$1.c")"; }
		echo "report.scale_churn_phases=ms per connection: xway $(ph churn); TCP $(ph plain)"
		med() { sed -n 's/^client.p50_setup_ms=//p' "$d/$1.c"; }
		echo "report.scale_paced=$paced connections one at a time, 100 ms apart: median connect + first exchange xway $(med paced) ms, TCP $(med pacedtcp) ms; ms per connection: xway $(ph paced); TCP $(ph pacedtcp)"
		echo "report.scale_churn_wall=xway $(sed -n 's/^client.setup_s=//p' "$d/churn.c") s, TCP $(sed -n 's/^client.setup_s=//p' "$d/plain.c") s for $churn connections (emulated)"
		echo "report.scale_hold=$hold open at once: $(val "$r" hold.client.xen_records) live xen records here, set up at $(sed -n 's/^client.setup_rate=//p' "$d/hold.c") conn/s; vchan nodes while open: $(val "$r" hold.client.open.vchan_nodes)"
	fi
fi
[ $fail = 0 ]
