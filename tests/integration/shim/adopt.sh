#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Check that a listener the shimmed server did not make itself is adopted
# and its connections accelerated: an unshimmed launcher (as systemd)
# makes the listener and starts the shimmed server with it, systemd style
# (fd 3, LISTEN_FDS/LISTEN_PID), inherited through exec (also a shimmed
# image that listened itself and execs the server: its registration died
# with its broker link; TCP_DEFER_ACCEPT survives the exec), or by SCM_RIGHTS
# (seen by the shim, and made with a raw recvmsg system call it does not
# see: adopted at the first accept).  Both ends check TCP_INFO (kernel TCP
# carried ~0 of the payload) and xwayctl must list the channels with their
# bytes.  Also: accept on fds that are not listeners keeps the kernel's
# errno (plain, shim without broker, shim with broker).
# XWAY_TEST_LIB=path runs another libxway.so (e.g. one built before the
# adoption, to see this fail).  Skips (77) while xwayd or the channel layer
# is not built.
set -u
cd "$(dirname "$0")/../../.."
B=${B:-build}
ADOPT=$B/tests/shim/xway-adopt
LIB=$(readlink -f "${XWAY_TEST_LIB:-$B/libxway.so}" 2>/dev/null || true)
XWAYD=$B/xwayd
. tests/integration/xwayd_up.sh
XWAYCTL=$B/xwayctl
T=${CASE_TIMEOUT:-120}
[ -x "$ADOPT" ] && [ -n "$LIB" ] || { echo "missing $ADOPT or libxway.so (run make)"; exit 1; }
if nm -D "$LIB" 2>/dev/null | grep -q '__asan_init'; then
	pre="$(${CC:-cc} -print-file-name=libasan.so) $LIB"
else
	pre=$LIB
fi
fails=0; passes=0; failed=()
ok()   { passes=$((passes + 1)); echo "  ok   $1"; }
fail() { fails=$((fails + 1)); failed+=("$1"); echo "  FAIL $1"; }

tmp=$(mktemp -d /tmp/xway-adopt.XXXXXX)
bpid=
cleanup() { [ -n "$bpid" ] && { kill "$bpid" 2>/dev/null; wait "$bpid" 2>/dev/null; }; rm -rf "$tmp"; }
trap cleanup EXIT

# adopt_case NAME KIND EXPECT SERVER_PRELOAD CLIENT_PRELOAD [env...]
adopt_case() {
	local name=$1 kind=$2 expect=$3 spre=$4 cpre=$5; shift 5
	rm -f "$tmp/port"; mkfifo "$tmp/port"
	local lpre=()
	# exec-self: the launcher is the shimmed server's previous image.
	[ "$kind" = exec-self ] && [ -n "$spre" ] && lpre=(LD_PRELOAD="$spre")
	env -u LD_PRELOAD "$@" "${lpre[@]}" XWAY_TEST_EXPECT="$expect" ADOPT_PRELOAD="$spre" \
		timeout -s KILL "$T" "$ADOPT" launch "$kind" "$ADOPT" serve "$kind" \
		>"$tmp/port" 2>"$tmp/server.err" &
	local lpid=$! port="" rc_c=1 rc_s=1
	read -r -t 30 port <"$tmp/port" || true
	if [ -n "$port" ]; then
		env "$@" XWAY_TEST_EXPECT="$expect" LD_PRELOAD="$cpre" \
			timeout -s KILL "$T" "$ADOPT" client "$port" 2>"$tmp/client.err"
		rc_c=$?
	fi
	{ wait "$lpid"; rc_s=$?; } 2>/dev/null
	if [ $rc_c -eq 0 ] && [ $rc_s -eq 0 ]; then
		ok "$name"
		grep -h 'kernel TCP' "$tmp/server.err" "$tmp/client.err" | sed 's/^/       /'
	else
		fail "$name (client $rc_c, server $rc_s)"
		sed 's/^/       server: /' "$tmp/server.err" | tail -60
		sed 's/^/       client: /' "$tmp/client.err" | tail -60
	fi
}

# late_broker: the shimmed server adopts its systemd listener while no
# broker runs (start-up is not held up; it stays unregistered); the
# broker starts; the first connection is plain TCP (nobody registered
# it), the accept after it registers it (the link's 3 s back-off from the
# failed start-up has passed: the script waits 4 s after the server
# printed its port, i.e. after that failure), so the second is
# accelerated.
late_broker() {
	local lsock=$tmp/late.sock lpid port="" rc_s=1 rc1=1 rc2=1
	rm -f "$tmp/port"; mkfifo "$tmp/port"
	env -u LD_PRELOAD XWAY_BROKER_SOCK="$lsock" ASAN_OPTIONS=detect_leaks=0 \
		ADOPT_CONNS=2 ADOPT_FIRST_EXPECT=tcp XWAY_TEST_EXPECT=accel ADOPT_PRELOAD="$pre" \
		timeout -s KILL "$T" "$ADOPT" launch systemd "$ADOPT" serve systemd \
		>"$tmp/port" 2>"$tmp/server.err" &
	lpid=$!
	read -r -t 30 port <"$tmp/port" || true
	"$XWAYD" --foreground --socket "$lsock" >"$tmp/late.log" 2>&1 &
	local lbpid=$!
	for i in $(seq 1 100); do [ -S "$lsock" ] && break; sleep 0.05; done
	sleep 4
	if [ -n "$port" ] && [ -S "$lsock" ]; then
		env XWAY_BROKER_SOCK="$lsock" ASAN_OPTIONS=detect_leaks=0 XWAY_TEST_EXPECT=tcp \
			LD_PRELOAD="$pre" timeout -s KILL "$T" "$ADOPT" client "$port" 2>"$tmp/client.err"
		rc1=$?
		env XWAY_BROKER_SOCK="$lsock" ASAN_OPTIONS=detect_leaks=0 XWAY_TEST_EXPECT=accel \
			LD_PRELOAD="$pre" timeout -s KILL "$T" "$ADOPT" client "$port" 2>>"$tmp/client.err"
		rc2=$?
	fi
	{ wait "$lpid"; rc_s=$?; } 2>/dev/null
	kill "$lbpid" 2>/dev/null; wait "$lbpid" 2>/dev/null
	if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ $rc_s -eq 0 ]; then
		ok "late broker: first plain, second accelerated"
		grep -h 'kernel TCP' "$tmp/server.err" "$tmp/client.err" | sed 's/^/       /'
	else
		fail "late broker (clients $rc1 $rc2, server $rc_s)"
		sed 's/^/       server: /' "$tmp/server.err" | tail -20
		sed 's/^/       client: /' "$tmp/client.err" | tail -20
	fi
}

echo "== helper on kernel TCP (no shim)"
for k in systemd inherit exec-self scm scm-raw; do
	adopt_case "plain $k" "$k" tcp "" ""
done
echo "== accept on non-listeners keeps the kernel's errno"
for m in plain nobroker; do
	if [ $m = plain ]; then envs=(); else
		envs=("LD_PRELOAD=$pre" "XWAY_BROKER_SOCK=$tmp/none.sock" ASAN_OPTIONS=detect_leaks=0)
	fi
	if env "${envs[@]}" timeout -s KILL "$T" "$ADOPT" errno 2>"$tmp/errno.err"
	then ok "errno $m"; else fail "errno $m"; sed 's/^/       /' "$tmp/errno.err" | tail -5; fi
done

accel=1
if [ ! -x "$XWAYD" ]; then
	echo "SKIP accelerated cases: $XWAYD is not built"; accel=0
elif nm -D "$LIB" | grep -qE '^ +w xway_chan_local_create'; then
	echo "SKIP accelerated cases: libxway.so has no channel layer"; accel=0
fi
if [ $accel = 1 ]; then
	xwayd_start "$tmp"
	if env "LD_PRELOAD=$pre" "XWAY_BROKER_SOCK=$sock" ASAN_OPTIONS=detect_leaks=0 \
		timeout -s KILL "$T" "$ADOPT" errno 2>"$tmp/errno.err"
	then ok "errno broker"; else fail "errno broker"; sed 's/^/       /' "$tmp/errno.err" | tail -5; fi
	echo "== adopted listeners, both ends shimmed (accelerated)"
	for k in systemd inherit exec-self scm scm-raw; do
		adopt_case "accel $k" "$k" accel "$pre" "$pre" \
			XWAY_BROKER_SOCK="$sock" ASAN_OPTIONS=detect_leaks=0
	done
	if ip -6 addr show dev lo 2>/dev/null | grep -q '::1'; then
		adopt_case "accel systemd ipv6" systemd accel "$pre" "$pre" ADOPT_FAMILY=6 \
			XWAY_BROKER_SOCK="$sock" ASAN_OPTIONS=detect_leaks=0
	else
		echo "  skip accel systemd ipv6: no ::1 on lo"
	fi
	echo "== shim without a broker: plain TCP, start-up not held up"
	adopt_case "nobroker systemd" systemd tcp "$pre" "$pre" \
		XWAY_BROKER_SOCK="$tmp/none.sock" ASAN_OPTIONS=detect_leaks=0
	late_broker
	echo "== only the client shimmed: plain TCP, nothing lost"
	adopt_case "cli-only systemd" systemd tcp "" "$pre" \
		XWAY_BROKER_SOCK="$sock" ASAN_OPTIONS=detect_leaks=0
	if [ -x "$XWAYCTL" ]; then
		# The broker's view: the five accelerated connections, local
		# backend, with the payload on the channel both ways.
		"$XWAYCTL" connections --json --socket "$sock" >"$tmp/conns.json" 2>&1
		if python3 - "$tmp/conns.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["connections"]
acc = [c for c in d if c["state"] in ("accelerated", "closed") and c["backend"] == "local"
       and c["bytes_c2s"] >= 1 << 20 and c["bytes_s2c"] >= 1 << 20]
for c in acc:
    for side in ("client", "server"):
        for k in ("tcp_bytes_sent", "tcp_bytes_received"):
            v = c[side][k]
            assert v is None or v < 4096, "%s %s %s = %s" % (c["id"], side, k, v)
assert len(acc) >= 5, "want 5 accelerated connections with 1 MiB each way, have %d: %s" % (len(acc), d[:3])
print("       xwayctl: %d accelerated local connections, 1 MiB each way on the channel, "
      "kernel TCP payload ~0" % len(acc))
PY
		then ok "accel xwayctl"; else fail "accel xwayctl"; fi
	fi
fi
echo "shim listener adoption: $passes passed, $fails failed"
[ $fails -eq 0 ] || { printf '  failed: %s\n' "${failed[@]}"; [ -f "$tmp/xwayd.log" ] && tail -20 "$tmp/xwayd.log"; exit 1; }
