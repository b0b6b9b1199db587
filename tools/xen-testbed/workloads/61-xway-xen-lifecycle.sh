#!/bin/bash
# SPDX-License-Identifier: MIT
# Process lifecycle of a cross-domain connection (tests/integration/
# lifecycle/lc.c, its remote-* cases): per case, `xway-lc remote-server`
# (an echo server) runs under the shim in the server domU and `xway-lc
# remote-CASE PORT` under the shim in the client domU, xwayd in Xen mode in
# both: fork (parent and child take turns), fork-handoff (the parent closes
# its copy, the child goes on), exec (the new image goes on with the fd),
# dup, and fork-serve (a forking echo server: the accepting process forks
# and closes its copy).  Each case compares every echoed byte and ends with
# a half-close and EOF, so a lost, duplicated or reordered byte fails it.
# Passes when every case of LC_CASES passes on both ends; the report says
# per case whether this domain's broker saw it on xen (with the payload on
# the channel) or on TCP.  fork, fork-handoff and fork-serve follow the
# fork on the Xen channel (docs/DESIGN.md §7.2: the child of a client end
# maps the grants again through its broker's REMAP): their records say
# xen with the payload on the channel.  exec-serve (the accepting
# process forks, the child execs itself with the connection as fd 0/1,
# as inetd and sshd do) carries the server's end over the exec (REMAP
# again, the event channel and the end's state memfd cross it): xen too.
# scm-serve (a process forked before the accept receives the accepted
# connection by SCM_RIGHTS, the acceptor closes its copy: vsftpd's
# privileged process and its session) follows it the same way: xen.
# remote-exec execs at the connecting end, which keeps its gntalloc
# descriptor for that: the new image maps the same grants (record
# S<gfd>): xen.  LC_GAP_CASES (none now) would run
# with a 60 s bound and be reported ("gap" or "now passes") without
# failing the workload.
set -u
role=$1
. "$TB_LIB"
lib=/opt/xway/lib/libxway.so
lc=$TB_BIN/xway-lc
tb_need "$TB_BIN/xwayd" "$TB_BIN/xwayctl" "$lib" "$lc"
tb_xwayd_dir
save() {
	for f in "$d"/*.err "$d/conns.json" "$d/shim.log"; do
		[ -e "$f" ] && cp "$f" "${TB_OUT:-/tmp/x}.${f##*/}" 2> /dev/null
	done
	tb_xwayd_end
}
trap save EXIT
tb_xwayd_start
export XWAY_BROKER_TIMEOUT_MS=3000
cases=${LC_CASES:-"remote-echo remote-dup remote-fork remote-fork-handoff remote-exec fork-serve exec-serve scm-serve"}
gaps=${LC_GAP_CASES-""}
limit=330            # per process; xway-lc's own alarm() is 300 s
shim_env=(LD_PRELOAD=$lib XWAY_BROKER_SOCK=$sock XWAY_LOG_LEVEL=debug XWAY_LOG_FILE=$d/shim.log)
declare -A port_of rc_of
fail=0; npass=0

serve() {
	local tc=$1 spid port="" pid extra=()
	[ "$tc" = fork-serve ] && extra=(XWAY_TEST_SERVE=fork)
	[ "$tc" = exec-serve ] && extra=(XWAY_TEST_SERVE=exec)
	[ "$tc" = scm-serve ] && extra=(XWAY_TEST_SERVE=scm)
	env "${shim_env[@]}" "${extra[@]}" XWAY_TEST_BIND="$TB_SELF_IP" timeout -s KILL $limit \
		"$lc" remote-server > "$d/$tc.s.out" 2> "$d/$tc.s.err" &
	spid=$!
	wait_for 60 grep -q . "$d/$tc.s.out" && read -r port pid < "$d/$tc.s.out"
	if [ -z "$port" ]; then
		echo "$tc: the server printed no port" >&2
		tb_signal "lc/$tc/port" none
		wait $spid; rc_of[$tc]=$?; return
	fi
	port_of[$tc]=$port
	wait_for 60 sh -c "'$TB_BIN/xwayctl' listeners --json --socket '$sock' | grep -q ':$port\"'" \
		|| echo "$tc: listener on $port never reached the broker" >&2
	tb_signal "lc/$tc/port" "$port"
	wait $spid; rc_of[$tc]=$?
}

connect() {
	local tc=$1 port c=$1
	case $tc in fork-serve|exec-serve|scm-serve) c=remote-echo ;; esac
	port=$(tb_wait "lc/$tc/port" 300) || { echo "$tc: the peer never listened" >&2; rc_of[$tc]=1; return; }
	[ "$port" = none ] && { rc_of[$tc]=1; return; }
	port_of[$tc]=$port
	wait_for 60 sh -c "xenstore-read /local/xway/$TB_PEER_DOMID/listeners | grep -Eq ':$port( |\$)'" \
		|| echo "$tc: the peer's listener is not in xenstore" >&2
	sleep 1      # our broker reads it on its watch event
	env "${shim_env[@]}" XWAY_TEST_HOST="$TB_PEER_IP" timeout -s KILL $limit \
		"$lc" "$c" "$port" > /dev/null 2> "$d/$tc.c.err"
	rc_of[$tc]=$?
}

t0=$(date +%s)
gapres=""
for tc in $cases $gaps; do
	gap=0
	for g in $gaps; do [ "$g" = "$tc" ] && gap=1; done
	if [ $gap = 1 ]; then
		export XWAY_TEST_ALARM=60
	else
		unset XWAY_TEST_ALARM
	fi
	if [ "$role" = server ]; then serve "$tc"; else connect "$tc"; fi
	if [ $gap = 1 ]; then
		st=gap; [ "${rc_of[$tc]}" = 0 ] && st=now-passes
		echo "lc.$tc.$role=$st"
		gapres="$gapres $tc:$st"
		sed "s/^/  $tc.$role (known gap): /" "$d/$tc".?.err >&2
		tb_barrier "lc/$tc/done" 400 > /dev/null || { echo "$tc: the peer never finished" >&2; fail=1; break; }
		continue
	fi
	tb_case_result lc "$tc" "${rc_of[$tc]}"
	tb_barrier "lc/$tc/done" 400 > /dev/null || { echo "$tc: the peer never finished" >&2; fail=1; break; }
done
echo "lc.seconds=$(( $(date +%s) - t0 ))"
tb_collect_records
recs=$(tb_records "$d/conns.json")
paths=""
for tc in $cases $gaps; do
	p=${port_of[$tc]:-x}
	rec=$(echo "$recs" | grep "\"server\":{\"addr\":\"[^\"]*:$p\"" | tail -n1)
	backend=$(echo "$rec" | grep -o '"backend":"[a-z]*"' | head -n1 | cut -d'"' -f4)
	c2s=$(tb_num "$rec" bytes_c2s); s2c=$(tb_num "$rec" bytes_s2c)
	chan=$(( ${c2s:-0} + ${s2c:-0} ))
	reason=$(echo "$rec" | grep -o '"reason":"[a-z-]*"' | head -n1 | cut -d'"' -f4)
	echo "lc.$tc.backend=${backend:-none}"
	echo "lc.$tc.chan_bytes=$chan"
	paths="$paths $tc:${backend:-none}${reason:+($reason)}/${chan}B"
	# What this broker must have recorded: the channel, with the payload,
	# for every case (the forks, the execs, the SCM_RIGHTS hand-over).
	case $tc in
	*)
		[ "$backend" = xen ] && [ $chan -gt 0 ] ||
			{ echo "$tc: not on the Xen channel (${backend:-no record}, $chan B)" >&2; fail=1; } ;;
	esac
done
ncases=$(echo $cases | wc -w)
echo "report.lc_$role=cases passed $npass/$ncases;$paths; known Xen gaps:${gapres:- none}"
[ $fail = 0 ] || { echo "a case failed or its record is wrong" >&2; exit 1; }
exit 0
