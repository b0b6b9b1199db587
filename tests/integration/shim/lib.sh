# SPDX-License-Identifier: MIT
# Shared by the shim's integration scripts: runs xway-tcpsem cases as a
# server process and a client process (only those get LD_PRELOAD, never a
# test runner), with every wait bounded, and cleans up by pid.
B=${B:-build}
TCPSEM=$B/tests/shim/xway-tcpsem
LIB=$(readlink -f "$B/libxway.so" 2>/dev/null || true)
CASE_TIMEOUT=${CASE_TIMEOUT:-150}
fails=0; passes=0
failed_list=()

# The preload value for the shim: an ASan build needs the ASan runtime
# first in LD_PRELOAD.
shim_preload() {
	if nm -D "$LIB" 2>/dev/null | grep -q '__asan_init'; then
		echo "$(${CC:-cc} -print-file-name=libasan.so) $LIB"
	else
		echo "$LIB"
	fi
}

# run_case MODE CASE FAMILY [env...]: one server + one client process,
# both with env...; SERVER_ENV / CLIENT_ENV (arrays) add to one side only.
SERVER_ENV=(); CLIENT_ENV=()
# Command prefixes per side (e.g. ip netns exec NS).
SERVER_PFX=(); CLIENT_PFX=()
run_case() {
	local mode=$1 tc=$2 fam=$3; shift 3
	local tmp; tmp=$(mktemp -d /tmp/xway-shimtest.XXXXXX)
	mkfifo "$tmp/port"
	"${SERVER_PFX[@]}" env "$@" "${SERVER_ENV[@]}" timeout -s KILL "$CASE_TIMEOUT" "$TCPSEM" server "$tc" "$fam" \
		>"$tmp/port" 2>"$tmp/server.err" &
	local spid=$!
	local line=""
	read -r -t 30 line <"$tmp/port" || true
	local port=${line%% *} tpid=${line##* }
	local rc_c=1 rc_s=1
	if [ -n "$port" ]; then
		"${CLIENT_PFX[@]}" env "$@" "${CLIENT_ENV[@]}" timeout -s KILL "$CASE_TIMEOUT" "$TCPSEM" client "$tc" "$fam" \
			"$port" "$tpid" 2>"$tmp/client.err"
		rc_c=$?
	fi
	{ wait "$spid"; rc_s=$?; } 2>/dev/null
	# The kill case kills its server on purpose.
	if [ "$tc" = kill ] && [ $rc_s -eq 137 ]; then rc_s=0; fi
	if [ $rc_c -eq 0 ] && [ $rc_s -eq 0 ]; then
		passes=$((passes + 1))
		echo "  ok   $mode $tc ipv$fam"
	else
		fails=$((fails + 1))
		failed_list+=("$mode/$tc/ipv$fam")
		echo "  FAIL $mode $tc ipv$fam (client $rc_c, server $rc_s)"
		sed 's/^/       client: /' "$tmp/client.err" | head -20
		sed 's/^/       server: /' "$tmp/server.err" | head -20
	fi
	rm -rf "$tmp"
}

# run_suite MODE [env...]: every case on 127.0.0.1 and ::1.
run_suite() {
	local mode=$1; shift
	local cases; cases=${SUITE_CASES:-$("$TCPSEM" list)}
	for fam in ${SUITE_FAMILIES:-4 6}; do
		for tc in $cases; do
			run_case "$mode" "$tc" "$fam" "$@"
		done
	done
}

have_ipv6_lo() {
	ip -6 addr show dev lo 2>/dev/null | grep -q '::1'
}

# ---- scripts with their own xwayd and python3 processes -------------------
# priv_broker_env NAME: a directory T (/tmp/xway-NAME.*) with SOCK in it; at
# exit the pids in $spid and $bpid are stopped and T removed.  fail MSG
# prints the tail of every $T/*.log and exits 1.  xwayd_up starts xwayd on
# SOCK (bpid; its log appended to $T/xwayd.log) and waits for its socket.
# shimmed CMD... runs CMD under the shim against it (bounded).
# need_bins_python: skip (77) unless xwayd, xwayctl, libxway.so and python3
# are there (the scripts that run python3 servers against a private xwayd).
need_bins_python() {
	local f
	for f in "$B/xwayd" "$B/xwayctl" "$B/libxway.so"; do
		[ -x "$f" ] || [ -f "$f" ] || { echo "SKIP: $f not built"; exit 77; }
	done
	command -v python3 >/dev/null || { echo "SKIP: python3 missing"; exit 77; }
}
priv_broker_env() {
	T=$(mktemp -d "/tmp/xway-$1.XXXXXX")
	SOCK=$T/xwayd.sock
	bpid=; spid=
	trap priv_broker_cleanup EXIT
}
priv_broker_cleanup() {
	local p
	for p in $spid $bpid; do kill "$p" 2>/dev/null; done
	for p in $spid $bpid; do wait "$p" 2>/dev/null; done
	rm -rf "$T"
}
fail() {
	echo "FAIL: $*"
	for f in "$T"/*.log; do echo "---- $f"; tail -n 20 "$f"; done
	exit 1
}
xwayd_up() {
	"$B/xwayd" --foreground --socket "$SOCK" --config /dev/null >>"$T/xwayd.log" 2>&1 &
	bpid=$!
	for _ in $(seq 1 250); do [ -S "$SOCK" ] && return 0; sleep 0.02; done
	fail "xwayd socket did not appear"
}
shimmed() {
	env LD_PRELOAD="$(shim_preload)" XWAY_BROKER_SOCK="$SOCK" ASAN_OPTIONS=detect_leaks=0 \
		timeout -s KILL 60 "$@"
}
