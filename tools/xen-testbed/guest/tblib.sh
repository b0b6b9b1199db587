# SPDX-License-Identifier: MIT
# Helpers shared by the test bed's scripts inside the guests (dom0 and the
# domUs) and by the workloads: progress lines, the kernel command line,
# bounded waits, and a barrier between the two domUs through xenstore.
#
# The barrier: each domU writes keys under its own
# /local/domain/<self>/data/xway-testbed/ and reads the peer's.  dom0 made
# that directory readable by the peer before unpausing the domUs; nodes the
# owner creates below it inherit those permissions.

TB_BOOT_T0=${TB_BOOT_T0:-$(cut -d' ' -f1 /proc/uptime)}

# Progress line with the guest's uptime (seconds since its kernel started).
say() { printf '[xtb %s %6ss] %s\n' "${TB_ROLE:-?}" "$(cut -d' ' -f1 /proc/uptime)" "$*"; }

# cmdline KEY: value of KEY=value on the kernel command line.
cmdline() {
	local w
	for w in $(cat /proc/cmdline); do
		case "$w" in "$1="*) echo "${w#*=}"; return 0 ;; esac
	done
	return 1
}

# wait_for SECONDS COMMAND...: run COMMAND every half second until it
# succeeds; fail after SECONDS.
wait_for() {
	local limit=$1 i=0; shift
	while ! "$@" > /dev/null 2>&1; do
		i=$((i + 1))
		[ $i -ge $((limit * 2)) ] && return 1
		sleep 0.5
	done
	return 0
}

# The domUs' shared area.  xenstore node names allow only letters,
# digits and "-/_@": anything else in NAME becomes "_".
tb_key()  { local n=$2; echo "/local/domain/$1/data/xway-testbed/${n//[^A-Za-z0-9\/_@-]/_}"; }

# tb_signal NAME [VALUE]: publish NAME to the peer.
tb_signal() { xenstore-write "$(tb_key "$TB_SELF_DOMID" "$1")" "${2:-1}"; }

# tb_wait NAME SECONDS: wait until the peer published NAME; print its value.
tb_wait() {
	wait_for "$2" xenstore-read "$(tb_key "$TB_PEER_DOMID" "$1")" || return 1
	xenstore-read "$(tb_key "$TB_PEER_DOMID" "$1")"
}

# tb_barrier NAME SECONDS: both domUs reach NAME before either goes on.
tb_barrier() {
	tb_signal "$1" && tb_wait "$1" "$2" > /dev/null
}

# tb_need FILE...: a workload skips (exit 77) when one is absent.
tb_need() {
	local f
	for f in "$@"; do
		[ -e "$f" ] || { echo "skip: $f not built or not staged" >&2; exit 77; }
	done
}

# ---- the workload's own xwayd in Xen mode --------------------------------
# tb_xwayd_dir [CONFIG-LINE...]: a fresh directory $d holding xwayd.conf
#   (Xen mode, log level 7 and a claim timeout of 6 s unless a line sets
#   them, then the lines given) and the socket path $sock.  The product's
#   2 s claim timeout is for real hosts: under emulation a server domU's
#   accept can come 3 s after the offer when the host is busy (seen: tcpsem
#   `intr` withdrawn at 00:48 on 2026-11-24, host load 3.3).
# tb_xwayd_start: start xwayd there ($bpid; its output appended to
#   $d/xwayd.log after a "=== xwayd start" line) and wait until it answers in
#   Xen mode; the workload exits 1 (with the log) if it does not.
# tb_xwayd_end: the EXIT trap's part: stop it, keep its log beside the
#   workload's output (${TB_OUT}.xwayd.log), remove $d.
# ctl ARGS...: xwayctl against it.
tb_xwayd_dir() {
	d=$(mktemp -d)
	sock=$d/xwayd.sock
	{
		printf '[broker]\nmode=xen\n'
		case " $* " in *" log_level="*) ;; *) echo log_level=7 ;; esac
		case " $* " in *" claim_timeout_ms="*) ;; *) echo claim_timeout_ms=6000 ;; esac
		[ $# -gt 0 ] && printf '%s\n' "$@"
	} > "$d/xwayd.conf"
}
tb_xwayd_start() {
	echo "=== xwayd start $(date +%T.%N)" >> "$d/xwayd.log"
	"$TB_BIN/xwayd" --foreground --config "$d/xwayd.conf" --socket "$sock" >> "$d/xwayd.log" 2>&1 &
	bpid=$!
	if ! wait_for 60 test -S "$sock" ||
	   ! ctl status --json | grep -q '"mode":"xen"'; then
		echo "xwayd did not start in Xen mode" >&2
		cat "$d/xwayd.log" >&2
		exit 1
	fi
}
tb_xwayd_end() {
	[ -n "${bpid:-}" ] && kill "$bpid" 2> /dev/null
	cp "$d/xwayd.log" "${TB_OUT:-/tmp/x}.xwayd.log" 2> /dev/null
	rm -rf "$d"
}
ctl() { "$TB_BIN/xwayctl" "$@" --socket "$sock"; }

# tb_records [FILE]: the connection records of an `xwayctl connections
# --json` answer (FILE, or stdin), one a line (grep them by
# "server":{"addr":"...:PORT"}).
tb_records() { sed 's/},{"id"/}\n{"id"/g' "${1:--}"; }

# tb_case_result KEY CASE RC: count one case of a per-case workload (npass,
# fail), print KEY.CASE.ROLE=pass|fail, and for a failure its exit status
# and error output ($d/CASE.?.err) on stderr.
tb_case_result() {
	local st=pass
	if [ "$3" = 0 ]; then npass=$((npass + 1)); else st=fail; fail=1; fi
	echo "$1.$2.$TB_ROLE=$st"
	if [ $st = fail ]; then
		echo "$2: $TB_ROLE exit $3" >&2
		sed "s/^/  $2.$TB_ROLE: /" "$d/$2".?.err >&2
	fi
}

# tb_collect_records: wait for the last closes' reports, show this broker's
# connections on stderr and keep them as JSON in $d/conns.json.
tb_collect_records() {
	sleep 3          # the REPORTs of the last closes reach the broker
	ctl connections >&2 || true
	ctl connections --json > "$d/conns.json" 2>&1
}

# tb_num RECORD FIELD: a numeric field of one connection record.
tb_num() { echo "$1" | grep -o "\"$2\":[0-9]*" | head -n1 | cut -d: -f2; }

# tb_accel_summary BYTES: from $d/conns.json, tb_xen = the xen records with
# at least BYTES on the channel client to server, tb_tcp_payload = the
# largest kernel TCP byte counter among the xen records.
tb_accel_summary() {
	local rec c2s k v
	tb_xen=0; tb_tcp_payload=0
	while IFS= read -r rec; do
		case "$rec" in *'"backend":"xen"'*) ;; *) continue ;; esac
		c2s=$(tb_num "$rec" bytes_c2s)
		[ "${c2s:-0}" -ge "$1" ] && tb_xen=$((tb_xen + 1))
		for k in tcp_bytes_sent tcp_bytes_received; do
			for v in $(echo "$rec" | grep -o "\"$k\":[0-9]*" | cut -d: -f2); do
				[ "$v" -gt "$tb_tcp_payload" ] && tb_tcp_payload=$v
			done
		done
	done < <(tb_records "$d/conns.json")
}
