# SPDX-License-Identifier: MIT
# Sourced by the integration runners (lifecycle, hazards, shim/adopt):
# xwayd_start DIR starts "$XWAYD" on DIR/xwayd.sock (sets sock and bpid,
# its log in DIR/xwayd.log) and waits up to 5 s for the socket; the runner
# exits 1 with the log if it does not come up.
xwayd_start() {
	sock=$1/xwayd.sock
	"$XWAYD" --foreground --socket "$sock" >"$1/xwayd.log" 2>&1 &
	bpid=$!
	for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.05; done
	[ -S "$sock" ] || { echo "xwayd did not come up:"; cat "$1/xwayd.log"; exit 1; }
}
