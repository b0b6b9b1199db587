#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Check the TCP-semantics cases between two network namespaces with their
# own addresses on a veth pair (made and removed here): on plain TCP, and
# under libxway.so with a private xwayd (co-resident: same kernel), where
# the payload must take the channel.  Skips (77) without root / netns
# support, or while xwayd is not built (then only the plain half runs).
set -u
cd "$(dirname "$0")/../../.."
. tests/integration/shim/lib.sh
[ -x "$TCPSEM" ] && [ -n "$LIB" ] || { echo "missing $TCPSEM or libxway.so (run make)"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root for network namespaces"; exit 77; }
command -v ip >/dev/null || { echo "SKIP: no ip(8)"; exit 77; }
a=xwshA$$; b=xwshB$$; va=xwva$$; vb=xwvb$$
tmp=$(mktemp -d /tmp/xway-netns.XXXXXX)
bpid=""
cleanup() {
	[ -n "$bpid" ] && { kill "$bpid" 2>/dev/null; wait "$bpid" 2>/dev/null; }
	ip netns del "$a" 2>/dev/null; ip netns del "$b" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
if ! ip netns add "$a" 2>"$tmp/err" || ! ip netns add "$b" 2>>"$tmp/err"; then
	echo "SKIP: cannot create network namespaces: $(cat "$tmp/err")"; exit 77
fi
set -e
ip link add "$va" type veth peer name "$vb"
ip link set "$va" netns "$a"; ip link set "$vb" netns "$b"
ip -n "$a" addr add 10.231.77.1/24 dev "$va"
ip -n "$b" addr add 10.231.77.2/24 dev "$vb"
ip -n "$a" addr add fd00:77::1/64 dev "$va" nodad
ip -n "$b" addr add fd00:77::2/64 dev "$vb" nodad
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
ip -n "$a" link set "$va" up; ip -n "$b" link set "$vb" up
set +e
SERVER_PFX=(ip netns exec "$a"); CLIENT_PFX=(ip netns exec "$b")
export XWAY_TEST_MB=${XWAY_TEST_MB:-16}
SUITE_CASES=${SUITE_CASES:-"echo bulk eof rst shut flags kill vec"}
run_fam() {  # mode fam env...
	local mode=$1 fam=$2; shift 2
	if [ "$fam" = 4 ]; then bind=10.231.77.1; else bind=fd00:77::1; fi
	for tc in $SUITE_CASES; do
		run_case "$mode" "$tc" "$fam" XWAY_TEST_BIND=$bind XWAY_TEST_HOST=$bind "$@"
	done
}
echo "== plain TCP across namespaces"
run_fam plain 4 XWAY_TEST_EXPECT=tcp
run_fam plain 6 XWAY_TEST_EXPECT=tcp
skipped=0
if [ -x "$B/xwayd" ] && ! nm -D "$LIB" | grep -qE '^ +w xway_chan_local_create'; then
	sock=$tmp/xwayd.sock
	"$B/xwayd" --foreground --socket "$sock" >"$tmp/xwayd.log" 2>&1 &
	bpid=$!
	for i in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
	pre=$(shim_preload)
	echo "== shimmed across namespaces (accelerated)"
	run_fam accel 4 XWAY_TEST_EXPECT=accel "LD_PRELOAD=$pre" XWAY_BROKER_SOCK="$sock" ASAN_OPTIONS=detect_leaks=0
	run_fam accel 6 XWAY_TEST_EXPECT=accel "LD_PRELOAD=$pre" XWAY_BROKER_SOCK="$sock" ASAN_OPTIONS=detect_leaks=0
else
	echo "xwayd or the channel layer not built: accelerated half not run"
	skipped=1
fi
echo "shim netns: $passes passed, $fails failed"
[ $fails -eq 0 ] || { printf '  failed: %s\n' "${failed_list[@]}"; [ -n "$bpid" ] && tail -20 "$tmp/xwayd.log"; exit 1; }
[ $skipped = 0 ] || exit 77
