#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The HAZARDS audit's cases (xway-hz, docs/HAZARDS.md) in three modes, as
# tests/integration/lifecycle/run.sh runs xway-lc:
#   plain    no shim: the cases assert kernel TCP behaviour;
#   nobroker the shim loaded, its broker absent: plain TCP through the shim;
#   accel    the shim with a private xwayd, XWAY_TEST_EXPECT=accel (TCP_INFO
#            on the real sockets shows the payload took the channel).
# fsize0 runs with the shim's debug log going to a file (XWAY_LOG_FILE).
# Then `make install DESTDIR=...`: the library must be readable by daemon
# users (mode 0644, readable as nobody).  Only the helper processes get
# LD_PRELOAD.  MODE/CASE pairs known to fail with the current shim are
# listed in HZ_KNOWN_FAIL (docs/HAZARDS.md gives the symptom of each) and
# are not run; HZ_KNOWN_FAIL= (empty) runs them too, to see if they are fixed.
set -u
cd "$(dirname "$0")/../../.."
B=${B:-build}
HZ=$B/tests/hazards/xway-hz
LIB=$(readlink -f "$B/libxway.so" 2>/dev/null || true)
XWAYD=$B/xwayd
. tests/integration/xwayd_up.sh
CASE_TIMEOUT=${CASE_TIMEOUT:-120}
KNOWN=${HZ_KNOWN_FAIL-}
[ -x "$HZ" ] && [ -n "$LIB" ] || { echo "missing $HZ or libxway.so (run make)"; exit 1; }

preload() {
	# An ASan build of the shim needs the ASan runtime first.
	if nm -D "$LIB" 2>/dev/null | grep -q '__asan_init'; then
		echo "$(${CC:-cc} -print-file-name=libasan.so) $LIB"
	else
		echo "$LIB"
	fi
}

tmp=$(mktemp -d /tmp/xway-hzrun.XXXXXX)
chmod 0755 "$tmp"
bpid=
cleanup() { [ -n "$bpid" ] && { kill "$bpid" 2>/dev/null; wait "$bpid" 2>/dev/null; }; rm -rf "$tmp"; }
trap cleanup EXIT

fails=0; passes=0; skips=0; failed=()
run() {         # run MODE CASE [env...]
	local mode=$1 tc=$2; shift 2
	local out=$tmp/out
	if [[ " $KNOWN " == *" $mode/$tc "* ]]; then
		echo "  known-fail, not run: $mode $tc (docs/HAZARDS.md)"; return
	fi
	local extra=()
	[ "$tc" = fsize0 ] && extra=(XWAY_LOG_LEVEL=debug XWAY_LOG_FILE="$tmp/shim-$mode.log")
	local pre=()
	# nofile: the usual soft limit, with the hard one as it is.
	[ "$tc" = nofile ] && pre=(bash -c 'ulimit -Sn 1024 2>/dev/null; exec "$@"' nofile)
	env "$@" "${extra[@]}" timeout -s KILL "$CASE_TIMEOUT" "${pre[@]}" "$HZ" "$tc" >"$out" 2>&1
	local rc=$?
	case $rc in
	0)  passes=$((passes + 1)); echo "  ok   $mode $tc $(tail -n 1 "$out")" ;;
	77) skips=$((skips + 1)); echo "  skip $mode $tc: $(tail -1 "$out")" ;;
	*)  fails=$((fails + 1)); failed+=("$mode/$tc")
	    echo "  FAIL $mode $tc (exit $rc$( [ $rc -gt 128 ] && echo ", signal $((rc - 128))"))"
	    sed 's/^/       /' "$out" | tail -15 ;;
	esac
}

cases=$("$HZ" list)
echo "== plain (kernel TCP)"
for tc in $cases; do run plain "$tc" XWAY_TEST_EXPECT=; done

echo "== shim, broker absent"
for tc in $cases; do
	run nobroker "$tc" "LD_PRELOAD=$(preload)" XWAY_BROKER_SOCK="$tmp/none.sock" \
		XWAY_TEST_EXPECT= ASAN_OPTIONS=detect_leaks=0
done

accel=1
if [ ! -x "$XWAYD" ]; then
	echo "SKIP accelerated mode: $XWAYD is not built"; accel=0
fi
if [ $accel = 1 ]; then
	xwayd_start "$tmp"
	# credthread's thread runs as nobody and connects to the broker.
	chmod 0666 "$sock"
	echo "== shim with a private xwayd (accelerated)"
	for tc in $cases; do
		run accel "$tc" "LD_PRELOAD=$(preload)" XWAY_BROKER_SOCK="$sock" \
			XWAY_TEST_EXPECT=accel ASAN_OPTIONS=detect_leaks=0
	done
fi

echo "== make install: the library is readable by daemon users"
if make -s -o build-all install B="$B" DESTDIR="$tmp/inst" PREFIX=/usr >"$tmp/install.log" 2>&1; then
	so=$(find "$tmp/inst" -name 'libxway.so*' -type f | head -n 1)
	if [ -z "$so" ]; then
		fails=$((fails + 1)); failed+=("install/no-lib"); echo "  FAIL make install put no libxway.so"
	elif [ "$(stat -c %a "$so")" != 644 ]; then
		fails=$((fails + 1)); failed+=("install/mode"); echo "  FAIL $so has mode $(stat -c %a "$so")"
	elif [ "$(id -u)" = 0 ] && ! runuser -u nobody -- test -r "$so"; then
		fails=$((fails + 1)); failed+=("install/nobody"); echo "  FAIL nobody cannot read $so"
	else
		passes=$((passes + 1)); echo "  ok   install ${so#$tmp/inst} mode 0644$( [ "$(id -u)" = 0 ] && echo ', readable as nobody')"
	fi
else
	fails=$((fails + 1)); failed+=("install"); echo "  FAIL make install:"; tail -5 "$tmp/install.log"
fi

echo "hazards: $passes passed, $fails failed, $skips skipped"
[ $fails -eq 0 ] || { printf '  failed: %s\n' "${failed[@]}"; exit 1; }
[ $accel = 1 ] || exit 77
exit 0
