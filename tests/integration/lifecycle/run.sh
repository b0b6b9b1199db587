#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Readiness and process-lifecycle cases (xway-lc) in three modes:
#   plain    no shim: the cases assert kernel TCP behaviour;
#   nobroker the shim loaded, its broker absent: plain TCP through the shim;
#   accel    the shim with a private xwayd: the same assertions, and
#            XWAY_TEST_EXPECT=accel checks (TCP_INFO on the real sockets)
#            that the payload took the channel; xwayctl shows the channels.
# The accelerated mode is skipped (77) while xwayd or the channel layer is
# not built.  Only the helper processes get LD_PRELOAD.
set -u
cd "$(dirname "$0")/../../.."
B=${B:-build}
LC=$B/tests/lifecycle/xway-lc
LIB=$(readlink -f "$B/libxway.so" 2>/dev/null || true)
XWAYD=$B/xwayd
. tests/integration/xwayd_up.sh
XWAYCTL=$B/xwayctl
CASE_TIMEOUT=${CASE_TIMEOUT:-120}
[ -x "$LC" ] && [ -n "$LIB" ] || { echo "missing $LC or libxway.so (run make)"; exit 1; }

preload() {
	# An ASan build of the shim needs the ASan runtime first.
	if nm -D "$LIB" 2>/dev/null | grep -q '__asan_init'; then
		echo "$(${CC:-cc} -print-file-name=libasan.so) $LIB"
	else
		echo "$LIB"
	fi
}

fails=0; passes=0; skips=0; failed=()
run() {         # run MODE CASE [env...]
	local mode=$1 tc=$2; shift 2
	local out; out=$(mktemp /tmp/xway-lc.XXXXXX)
	env "$@" timeout -s KILL "$CASE_TIMEOUT" "$LC" "$tc" >"$out" 2>&1
	local rc=$?
	case $rc in
	0)  passes=$((passes + 1)); echo "  ok   $mode $tc" ;;
	77) skips=$((skips + 1)); echo "  skip $mode $tc: $(tail -1 "$out")" ;;
	*)  fails=$((fails + 1)); failed+=("$mode/$tc")
	    echo "  FAIL $mode $tc (exit $rc)"; sed 's/^/       /' "$out" | tail -15 ;;
	esac
	rm -f "$out"
}

cases=$("$LC" list)
echo "== plain (kernel TCP)"
for tc in $cases; do run plain "$tc" XWAY_TEST_EXPECT=; done

tmp=$(mktemp -d /tmp/xway-lcrun.XXXXXX)
bpid=
cleanup() { [ -n "$bpid" ] && { kill "$bpid" 2>/dev/null; wait "$bpid" 2>/dev/null; }; rm -rf "$tmp"; }
trap cleanup EXIT

echo "== shim, broker absent"
for tc in $cases; do
	run nobroker "$tc" "LD_PRELOAD=$(preload)" XWAY_BROKER_SOCK="$tmp/none.sock" \
		XWAY_TEST_EXPECT= ASAN_OPTIONS=detect_leaks=0
done

accel=1
if [ ! -x "$XWAYD" ]; then
	echo "SKIP accelerated mode: $XWAYD is not built"; accel=0
elif nm -D "$LIB" | grep -qE '^ +w xway_chan_local_create'; then
	echo "SKIP accelerated mode: libxway.so has no channel layer"; accel=0
fi
if [ $accel = 1 ]; then
	xwayd_start "$tmp"
	expect=accel
	echo "== shim with a private xwayd (accelerated)"
	for tc in $cases; do
		run accel "$tc" "LD_PRELOAD=$(preload)" XWAY_BROKER_SOCK="$sock" \
			XWAY_TEST_EXPECT=$expect ASAN_OPTIONS=detect_leaks=0
	done
	if [ -x "$XWAYCTL" ]; then
		# The broker's side of the story: >= 3000 channels claimed
		# (the three 1000-connection cases), none fell back but the
		# one exec-noshim sends on purpose (with its reason), and the
		# channels carried the payload (duplex alone moves 32 MiB).
		"$XWAYCTL" stats --json --socket "$sock" >"$tmp/stats.json" 2>&1
		"$XWAYCTL" connections --json --socket "$sock" >"$tmp/conns.json" 2>&1
		if python3 - "$tmp/stats.json" "$tmp/conns.json" <<'PY'
import json, sys
st = json.load(open(sys.argv[1])); cs = json.load(open(sys.argv[2]))["connections"]
moved = sum((c.get("bytes_c2s") or 0) + (c.get("bytes_s2c") or 0) for c in cs)
# The one deliberate fallback: exec-noshim's connection leaves the channel
# for an image without the shim, and its record says so.
noshim = [c for c in cs if c.get("reason") == "left-channel" and
          "exec of an image without libxway.so" in (c.get("detail") or "")]
print("  xwayctl: %d claims, %d fallbacks (%d exec-noshim), %d connections listed, "
      "%d channel bytes" % (st["claims"], st["fallbacks"], len(noshim), len(cs), moved))
sys.exit(0 if st["claims"] >= 3000 and len(noshim) == 1 and
         st["fallbacks"] == len(noshim) and moved >= 32 << 20 else 1)
PY
		then passes=$((passes + 1)); echo "  ok   accel xwayctl-counters"
		else fails=$((fails + 1)); failed+=("accel/xwayctl-counters"); echo "  FAIL accel xwayctl-counters"
		fi
	fi
fi
echo "lifecycle: $passes passed, $fails failed, $skips skipped"
[ $fails -eq 0 ] || { printf '  failed: %s\n' "${failed[@]}"; exit 1; }
[ $accel = 1 ] || exit 77
exit 0
