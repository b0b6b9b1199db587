# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# Shared harness for the apps-compat cases, sourced by apps-compat/<app>/run.sh.
# It gives each case a private temp directory, a private xwayd in shim mode,
# a launcher (xw) that puts a process under the shim, port helpers, sha256
# helpers, the acceleration check (check_accel.py on `xwayctl connections
# --json`) and one exit path that stops everything the case started, by pid,
# and removes the temp directory.  Modes (XWAY_COMPAT_MODE):
#   plain  no shim, no broker: proves the harness, the app config and the checks;
#   shim   (default) servers and clients under LD_PRELOAD=build/libxway.so with
#          a private xwayd; every connection must end up accelerated;
#   nobroker  the shim loaded but its broker socket absent: every app must
#          still work on plain TCP (the "broker down" promise); no
#          acceleration check.
# Exit codes of a case: 0 PASS, 1 FAIL, 77 SKIP.

set -u -o pipefail

COMPAT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMPAT_LIB="$COMPAT_ROOT/apps-compat/lib"
MODE=${XWAY_COMPAT_MODE:-shim}
B=${B:-build}
case "$B" in /*) ;; *) B="$COMPAT_ROOT/$B" ;; esac
COMPAT_PIDS=()          # pids to stop at exit, in start order
COMPAT_PIDFILES=()      # pid files written by daemonizing servers
COMPAT_DONE=0
T=""
SOCK=""
XWAY_LIB=""

log()  { printf '[%s %s] %s\n' "$COMPAT_NAME" "$(date +%T)" "$*" >&"${COMPAT_ERR:-2}"; }

# Stop one pid: TERM, wait up to 10 s, then KILL.  Only pids we recorded or
# that carry our tag reach here.
compat_stop_pid() {
	local pid=$1 i
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		# A zombie child of ours counts as gone once reaped.
		[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && { wait "$pid" 2>/dev/null; return 0; }
		sleep 0.1
	done
	log "pid $pid ignored SIGTERM for 10 s, sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}

# Every process started through xw/compat_bg carries XWAY_COMPAT_TAG=$T in
# its environment, so forked workers that outlive their parent (sshd
# sessions, apache children, inetd children) can be found by pid at exit.
compat_tagged_pids() {
	local e pid
	for e in /proc/[0-9]*/environ; do
		pid=${e#/proc/}; pid=${pid%/environ}
		[ "$pid" = $$ ] && continue
		# grep without -q reads to the end: no SIGPIPE for tr under pipefail.
		tr '\0' '\n' 2>/dev/null < "$e" | grep -xF "XWAY_COMPAT_TAG=$T" >/dev/null && echo "$pid"
	done
	return 0
}

# compat_case_pids: every process of this case: the tagged ones, the
# recorded servers (pids and pid files) and all their descendants.  The
# descendants matter because daemons that rewrite their process title
# (sshd, proftpd) also overwrite the environment /proc shows, tag included.
compat_case_pids() {
	local roots=() f
	roots+=("${COMPAT_PIDS[@]}")
	for f in "${COMPAT_PIDFILES[@]}"; do
		[ -s "$f" ] && roots+=("$(head -n1 "$f" | tr -dc 0-9)")
	done
	mapfile -t -O "${#roots[@]}" roots < <(compat_tagged_pids)
	ps -e -o pid=,ppid= | awk -v roots="${roots[*]}" -v self=$$ -v subsh="$BASHPID" '
		BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) if (r[i] != "") want[r[i]] = 1 }
		{ parent[$1] = $2; pids[++m] = $1 }
		END {
			# Repeat until no new descendant appears (bounded by the count).
			for (pass = 0; pass < m; pass++) {
				added = 0
				for (i = 1; i <= m; i++) { p = pids[i]
					if (!(p in want) && (parent[p] in want)) { want[p] = 1; added = 1 } }
				if (!added) break
			}
			for (p in want) if (p != self && p != subsh && (p in parent)) print p
		}'
}

compat_cleanup() {
	local rc=$? i pid f all=""
	trap - EXIT INT TERM
	set +e
	[ -n "${COMPAT_PRE_CLEANUP:-}" ] && $COMPAT_PRE_CLEANUP
	# Listed before anything stops, while the servers' children are still
	# their children.  Order: daemons (pid files), then every other process
	# of the case, then the recorded background pids newest first, so the
	# broker (started first) goes last.
	[ -n "$T" ] && all=$(compat_case_pids)
	for f in "${COMPAT_PIDFILES[@]}"; do
		[ -s "$f" ] && compat_stop_pid "$(head -n1 "$f" | tr -dc 0-9)"
	done
	for pid in $all; do
		[[ " ${COMPAT_PIDS[*]} " == *" $pid "* ]] || compat_stop_pid "$pid"
	done
	for ((i = ${#COMPAT_PIDS[@]} - 1; i >= 0; i--)); do
		compat_stop_pid "${COMPAT_PIDS[i]}"
	done
	if [ -n "$T" ]; then
		if [ "${XWAY_COMPAT_KEEP:-0}" = 1 ]; then
			log "kept $T"
		else
			rm -rf -- "$T"
		fi
	fi
	if [ $COMPAT_DONE = 0 ]; then
		# Died before reaching a verdict (set -e, signal, ...): a failure.
		[ $rc = 0 ] || [ $rc = 77 ] || rc=1
		[ $rc = 0 ] && rc=1
		compat_verdict_line FAIL "aborted (exit $rc)"
	fi
	exit $rc
}

# Verdicts and log dumps go to the case's own stdout/stderr, saved at init,
# even when fail is called inside a function whose output is redirected.
compat_verdict_line() {
	local dt=$(( $(date +%s) - COMPAT_T0 ))
	echo "compat-$COMPAT_NAME: $1 [$MODE] (${dt}s)${2:+ - $2}" >&"${COMPAT_OUT:-1}"
}

COMPAT_NOTE=""
pass() { COMPAT_DONE=1; compat_verdict_line PASS "${1:-}$COMPAT_NOTE"; exit 0; }
fail() { COMPAT_DONE=1; compat_snapshot_connections; compat_dump_logs; compat_verdict_line FAIL "$*"; exit 1; }

# On failure with a broker, what it recorded (states, reasons, byte counts)
# goes into the logs: the first thing to look at after a data error.
compat_snapshot_connections() {
	[ "$MODE" = shim ] && [ -S "${SOCK:-}" ] && [ -x "$B/xwayctl" ] || return 0
	python3 "$COMPAT_LIB/check_accel.py" --xwayctl "$B/xwayctl" --socket "$SOCK" \
		--c2s 0 --s2c 0 --min-conns 0 --settle 0 --all >"$T/log/connections-at-failure" 2>&1
	return 0
}
skip() { COMPAT_DONE=1; compat_verdict_line SKIP "$*"; exit 77; }

# On failure, the tail of every log in $T/log says what the server did.
compat_dump_logs() {
	local f
	[ -d "$T/log" ] || return 0
	exec 2>&"${COMPAT_ERR:-2}"
	for f in "$T"/log/*; do
		[ -s "$f" ] || continue
		echo "----- tail of ${f#$T/}" >&2
		case "${f##*/}" in
		diagnosis) tail -n 150 "$f" >&2 ;;
		# The newest connections (the failing one) are last; the totals follow.
		connections-at-failure) grep -v '^ *[0-9]* x state=' "$f" | tail -n 12 >&2 ;;
		*) tail -n 25 "$f" >&2 ;;
		esac
	done
}

# compat_init NAME: private temp dir, traps, mode checks, broker in shim mode.
compat_init() {
	COMPAT_NAME=$1
	COMPAT_T0=$(date +%s)
	exec {COMPAT_OUT}>&1 {COMPAT_ERR}>&2
	case "$MODE" in plain|shim|nobroker) ;; *)
		echo "XWAY_COMPAT_MODE must be 'plain', 'shim' or 'nobroker', not '$MODE'" >&2; exit 2 ;;
	esac
	[ "$(id -u)" = 0 ] || { COMPAT_DONE=1; compat_verdict_line SKIP "needs root (daemons, privilege drop)"; exit 77; }
	T=$(mktemp -d "/tmp/xway-compat-$COMPAT_NAME.XXXXXX")
	# Daemons drop privileges (www-data, mysql, ftp, nobody): they must reach
	# their files, the broker socket and the library under $T.
	chmod 0755 "$T"
	mkdir -p "$T/log"
	trap compat_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	export XWAY_COMPAT_TAG="$T"
	[ "$MODE" = shim ] && compat_start_broker
	[ "$MODE" = nobroker ] && compat_use_shim_without_broker
	return 0
}

# compat_need CMD...: every command must exist, else try the compat package
# set once, else SKIP with the names of what is missing.
compat_need() {
	local c missing=()
	for c in "$@"; do command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || missing+=("$c"); done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "missing ${missing[*]}: running tools/install-deps.sh compat"
	"$COMPAT_ROOT/tools/install-deps.sh" compat >"$T/log/install-deps" 2>&1 \
		|| log "install-deps failed (see log)"
	missing=()
	for c in "$@"; do command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || missing+=("$c"); done
	[ ${#missing[@]} -eq 0 ] || skip "not installed: ${missing[*]}"
}

# The library must be readable by the unprivileged users daemons switch to;
# if the build tree is not, use a world-readable copy.
compat_find_lib() {
	[ -e "$B/libxway.so" ] || fail "$MODE mode needs $B/libxway.so (run 'make'; or XWAY_COMPAT_MODE=plain)"
	XWAY_LIB="$B/libxway.so"
	if ! runuser -u nobody -- test -r "$XWAY_LIB" 2>/dev/null; then
		cp "$XWAY_LIB" "$T/libxway.so"; chmod 0644 "$T/libxway.so"
		XWAY_LIB="$T/libxway.so"
	fi
}

# The launcher users run: tools/xway-run (checks its options, appends the
# library to LD_PRELOAD, exports XWAY_BROKER_SOCK, execs).  With
# XWAY_COMPAT_LAUNCHER=env, or without tools/xway-run, plain env LD_PRELOAD.
compat_set_launcher() {
	if [ "${XWAY_COMPAT_LAUNCHER:-xway-run}" = xway-run ] && [ -x "$COMPAT_ROOT/tools/xway-run" ]; then
		XW=("$COMPAT_ROOT/tools/xway-run" --lib "$XWAY_LIB" --broker-sock "$SOCK")
	else
		XW=(env LD_PRELOAD="$XWAY_LIB${LD_PRELOAD:+:$LD_PRELOAD}" XWAY_BROKER_SOCK="$SOCK")
	fi
	log "launcher: ${XW[*]}"
}

compat_use_shim_without_broker() {
	compat_find_lib
	SOCK="$T/no-broker.sock"   # never created
	compat_set_launcher
	log "shim $XWAY_LIB loaded, broker socket $SOCK absent"
}

compat_start_broker() {
	local i
	for f in "$B/xwayd" $([ "${XWAY_COMPAT_ACCEL:-1}" = 0 ] || echo "$B/xwayctl"); do
		[ -e "$f" ] || fail "shim mode needs $f (run 'make'; or XWAY_COMPAT_MODE=plain)"
	done
	compat_find_lib
	SOCK="$T/xwayd.sock"
	"$B/xwayd" --foreground --socket "$SOCK" >"$T/log/xwayd" 2>&1 &
	COMPAT_PIDS+=($!)
	for ((i = 0; i < 100; i++)); do
		[ -S "$SOCK" ] && break
		kill -0 "${COMPAT_PIDS[-1]}" 2>/dev/null || fail "xwayd exited at start"
		sleep 0.1
	done
	[ -S "$SOCK" ] || fail "xwayd socket $SOCK did not appear within 10 s"
	# Processes that dropped privileges must be able to connect too.
	chmod 0666 "$SOCK"
	log "xwayd pid ${COMPAT_PIDS[-1]} on $SOCK"
	compat_set_launcher
}

# xw CMD...: run CMD in the mode's environment (shim: LD_PRELOAD + broker).
# XW is the same as a command prefix, for `timeout 60 "${XW[@]}" CMD`.
XW=(env)
xw() { "${XW[@]}" "$@"; }

# bounded SECS CMD...: run CMD under xw, at most SECS seconds.  On a hang it
# first records what every process of the case is doing (compat_diagnose,
# into $T/log/diagnosis: the evidence the shim engineers need), then stops
# CMD and returns 124.  Redirections given to `bounded` apply to CMD.
bounded() {
	local secs=$1 pid i; shift
	# <&0: a background job would otherwise get /dev/null as its stdin.
	"${XW[@]}" "$@" <&0 &
	pid=$!
	for ((i = 0; i < secs * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid"; return $?; }
		sleep 0.1
	done
	log "'$1' still running after ${secs}s: recording what each process does"
	compat_diagnose "$*" >>"$T/log/diagnosis" 2>&1
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 30; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 124
}

# compat_diagnose WHAT: for every process of this case: command, state,
# kernel wait channel, current system call, its descriptors (sockets,
# memfds, eventfds), and one second of strace for those using CPU.
compat_diagnose() {
	local pid fds
	echo "=== $(date +%T) hang in: $1"
	for pid in $(compat_case_pids | sort -n); do
		[ -r "/proc/$pid/stat" ] || continue
		echo "--- pid $pid ppid $(awk '{print $4}' "/proc/$pid/stat") state $(awk '{print $3}' "/proc/$pid/stat")" \
			"cpu(utime+stime) $(awk '{print $14 + $15}' "/proc/$pid/stat")" \
			"wchan $(cat "/proc/$pid/wchan" 2>/dev/null) :: $(tr '\0' ' ' < "/proc/$pid/cmdline" | cut -c1-200)"
		echo "    syscall: $(cat "/proc/$pid/syscall" 2>/dev/null | cut -c1-120)"
		fds=$(for f in /proc/$pid/fd/*; do printf '%s->%s ' "${f##*/}" "$(readlink "$f" 2>/dev/null)"; done)
		echo "    fds: $fds" | cut -c1-1500
		if [ "$(awk '{print $3}' "/proc/$pid/stat")" = R ] && command -v strace >/dev/null; then
			timeout 1 strace -p "$pid" 2>&1 | head -n 12 | sed 's/^/    strace: /'
		fi
	done
}

# compat_bg LOGNAME CMD...: start CMD under xw in the background, record its
# pid (also in BG_PID: not echoed, since $(...) would lose COMPAT_PIDS).
compat_bg() {
	local name=$1; shift
	# A simple command, not the xw function: bash then forks once and env
	# execs the program, so BG_PID is the server itself.
	"${XW[@]}" "$@" >"$T/log/$name" 2>&1 &
	BG_PID=$!
	COMPAT_PIDS+=("$BG_PID")
}

# preloaded PID WHAT: with the shim on, PID must have libxway.so mapped (the
# preload really reached this server through its daemonizing, re-exec or
# privilege drop).  Also checks PID's children when WHAT ends in '+'.
preloaded() {
	local pid=$1 what=$2 c n=""
	[ "$MODE" = plain ] && return 0
	[ -n "$pid" ] && [ -r "/proc/$pid/maps" ] || fail "$what: no process $pid to check"
	grep -q 'libxway\.so' "/proc/$pid/maps" || fail "$what (pid $pid) runs without libxway.so: LD_PRELOAD was lost"
	if [ "${what%+}" != "$what" ]; then
		n=0
		for c in $(ps -o pid= --ppid "$pid"); do
			grep -q 'libxway\.so' "/proc/$c/maps" 2>/dev/null \
				|| fail "$what child $c runs without libxway.so"
			n=$((n + 1))
		done
	fi
	log "$what (pid $pid${n:+, $n children}) has libxway.so mapped"
}

# free_port [COUNT]: the first of COUNT consecutive TCP ports on 127.0.0.1
# that are free right now, chosen at random BELOW the kernel's ephemeral
# range: a port from that range can be taken by any outgoing connection on
# the machine between this check and the server's bind (seen on a loaded
# machine: mariadbd "Address already in use").
free_port() {
	python3 - "${1:-1}" <<'PY'
import random, socket, sys
count = int(sys.argv[1])
try:
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    lo = 32768
top = max(lo - count, 10001)
for _ in range(200):
    base = random.randrange(10000, top)
    socks = []
    try:
        for p in range(base, base + count):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    sys.exit(0)
sys.exit("free_port: no free port range found")
PY
}

# wait_port PORT [SECONDS] [PID]: wait until something listens on PORT;
# fails early if PID (the server) died.
wait_port() {
	local port=$1 secs=${2:-30} pid=${3:-} i
	for ((i = 0; i < secs * 10; i++)); do
		ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && return 0
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
			fail "server (pid $pid) exited before listening on port $port"
		fi
		sleep 0.1
	done
	fail "nothing listening on port $port after ${secs}s"
}

# wait_file FILE [SECONDS]: wait until FILE is non-empty (pid files).
wait_file() {
	local f=$1 secs=${2:-30} i
	for ((i = 0; i < secs * 10; i++)); do
		[ -s "$f" ] && return 0
		sleep 0.1
	done
	fail "$f did not appear after ${secs}s"
}

# mkdata FILE MB: MB mebibytes of random bytes (not compressible, so no
# layer can shrink it and hide lost bytes).
mkdata() {
	head -c "$(( $2 * 1024 * 1024 ))" /dev/urandom > "$1"
}

sha() { sha256sum "$1" | awk '{print $1}'; }

# same FILE1 FILE2 WHAT: fail unless byte-identical.
same() {
	local a b
	[ -f "$2" ] || fail "$3: $2 missing"
	a=$(sha "$1"); b=$(sha "$2")
	[ "$a" = "$b" ] || fail "$3: sha256 differs ($(stat -c%s "$1") vs $(stat -c%s "$2") bytes)"
	log "$3: $(stat -c%s "$2") bytes, sha256 ok"
}

# same_prefix FULL PART WHAT: PART must be a non-empty byte-exact prefix of
# FULL (for apps that stop reading at a deadline by design, like iperf3).
same_prefix() {
	local n
	[ -f "$2" ] || fail "$3: $2 missing"
	n=$(stat -c%s "$2")
	[ "$n" -gt 0 ] || fail "$3: nothing received"
	cmp -s -n "$n" "$1" "$2" || fail "$3: the $n bytes received are not a prefix of what was sent"
	log "$3: $n of $(stat -c%s "$1") bytes received, byte-exact prefix"
}

# check_accel C2S S2C [MIN_CONNS] [extra check_accel.py args...]: in shim
# mode, the private broker must report every connection accelerated (or
# closed after being accelerated) on the local backend, channel bytes
# covering the payload each way, and kernel TCP carrying almost none of it.
# In plain mode there is no broker: nothing to check.
check_accel() {
	[ "$MODE" = shim ] || return 0
	if [ "${XWAY_COMPAT_ACCEL:-1}" = 0 ]; then
		# Debugging knob: data checks under the shim with a broker, before
		# xwayctl exists.  The verdict line says so.
		log "acceleration NOT checked (XWAY_COMPAT_ACCEL=0)"
		COMPAT_NOTE=" (acceleration not checked)"
		return 0
	fi
	local c2s=$1 s2c=$2 min=${3:-1}; shift 3 2>/dev/null || shift $#
	python3 "$COMPAT_LIB/check_accel.py" --xwayctl "$B/xwayctl" --socket "$SOCK" \
		--c2s "$c2s" --s2c "$s2c" --min-conns "$min" "$@" \
		>"$T/log/accel" 2>&1
	local rc=$?
	cat "$T/log/accel" >&2
	[ $rc = 0 ] || fail "acceleration check failed (see above)"
}

# tool_version PKG: the installed Debian version, for the report.
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }
