#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Integration: a broker restart while a shimmed server sleeps in accept().
# The new xwayd restores the listener from <socket>.listeners (the kernel
# still shows that socket listening) and the server's shim, whose link died,
# sends its CLAIM again on a fresh link: the FIRST connection after the
# restart is accelerated (channel bytes in xwayctl, ~0 kernel TCP payload
# reported by both shims).  Before, it stayed on TCP (no listener, broker
# down).  Also: a listener that is gone is not restored, and a malformed
# state file is refused with a warning while the broker starts.
# Skips (77) if the binaries or python3 are missing.
set -u
cd "$(dirname "$0")/../../.."
. tests/integration/shim/lib.sh
need_bins_python

priv_broker_env restart
stop_broker() {
	kill -TERM "$bpid"; wait "$bpid" 2>/dev/null; bpid=
	[ ! -S "$SOCK" ] || fail "socket left behind after SIGTERM"
}
ctl() { "$B/xwayctl" "$@" --socket "$SOCK"; }

cat >"$T/srv.py" <<'EOF'
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
for i in range(int(sys.argv[1])):
    c, _ = s.accept()
    while True:
        b = c.recv(65536)
        if not b:
            break
        c.sendall(b)
    c.close()
EOF
cat >"$T/cli.py" <<'EOF'
import socket, sys, threading
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
data = bytes(range(256)) * 4096 * 2            # 2 MiB
got = bytearray()
def rd():
    while True:
        b = c.recv(65536)
        if not b:
            break
        got.extend(b)
t = threading.Thread(target=rd); t.start()
c.sendall(data); c.shutdown(socket.SHUT_WR); t.join(60)
sys.exit(0 if bytes(got) == data else 1)
EOF

# accelerated PORT N: the N-th record to PORT (in order) is a closed local
# channel with the 2 MiB each way and ~0 kernel TCP payload on both sides.
accelerated() {
	local i
	for i in $(seq 1 100); do
		ctl connections --json >"$T/conns.json" 2>&1
		python3 - "$T/conns.json" "$1" "$2" <<'PY' && return 0
import json, sys
d = [c for c in json.load(open(sys.argv[1]))["connections"]
     if c["server"]["addr"].endswith(":" + sys.argv[2])]
n = int(sys.argv[3])
c = d[n - 1] if len(d) >= n else None
sys.exit(0 if c and c["state"] == "closed" and c["backend"] == "local" and
         c["bytes_c2s"] >= 2 << 20 and c["bytes_s2c"] >= 2 << 20 and
         all((c[s][k] is not None and c[s][k] < 4096)
             for s in ("client", "server")
             for k in ("tcp_bytes_sent", "tcp_bytes_received")) else 1)
PY
		sleep 0.05
	done
	cat "$T/conns.json"
	return 1
}

xwayd_up
shimmed python3 "$T/srv.py" 3 >"$T/port" 2>"$T/srv.log" &
spid=$!
for _ in $(seq 1 250); do [ -s "$T/port" ] && break; sleep 0.02; done
port=$(cat "$T/port")
[ -n "$port" ] || fail "server did not start"
shimmed python3 "$T/cli.py" "$port" 2>>"$T/cli.log" || fail "client 1: data mismatch"
accelerated "$port" 1 || fail "connection 1 (before the restart) not accelerated"
grep -q " $(printf '%d' "$port") " "$SOCK.listeners" ||
	fail "the listener is not in $SOCK.listeners: $(cat "$SOCK.listeners")"

# Restart while the server sleeps in accept().
stop_broker
xwayd_up
grep -q "restored 1 listener" "$T/xwayd.log" || fail "the new broker restored no listener"
ctl listeners | grep -q "127.0.0.1:$port " || fail "restored listener not shown by xwayctl"
shimmed python3 "$T/cli.py" "$port" 2>>"$T/cli.log" || fail "client 2: data mismatch"
accelerated "$port" 1 || fail "the first connection after the restart is not accelerated"
shimmed python3 "$T/cli.py" "$port" 2>>"$T/cli.log" || fail "client 3: data mismatch"
accelerated "$port" 2 || fail "the second connection after the restart is not accelerated"
wait "$spid" || fail "server exit status"
spid=
# Its listener closed: the record goes (LISTEN_DEL, or the periodic check).
for _ in $(seq 1 200); do ctl listeners | grep -q ":$port " || break; sleep 0.05; done
ctl listeners | grep -q ":$port " && fail "listener still registered after the server exited"

# A listener that is gone is not restored: put it back in the file.
stop_broker
printf 'xway-listeners 1\n2 00000000000000000000ffff7f000001 %s 0 0 123456789\n' "$port" \
	>"$SOCK.listeners"
: >"$T/xwayd.log"
xwayd_up
ctl listeners | grep -q ":$port " && fail "a listener that no longer listens was restored"
grep -q "restored" "$T/xwayd.log" && fail "restored something: $(cat "$T/xwayd.log")"

# A malformed file: warned about, ignored, the broker runs.
for bad in 'garbage' $'xway-listeners 1\n2 zz 1 0 0 1' $'xway-listeners 1\n7 00000000000000000000ffff7f000001 80 0 0 1' \
	   $'xway-listeners 1\n2 00000000000000000000ffff7f000001 99999 0 0 1' \
	   $'xway-listeners 1\n2 00000000000000000000ffff7f000001 80 0 2 1' \
	   $'xway-listeners 1\n2 00000000000000000000ffff7f000001 80 0 0 x,1'; do
	stop_broker
	printf '%s\n' "$bad" >"$SOCK.listeners"
	: >"$T/xwayd.log"
	xwayd_up
	ctl status >/dev/null || fail "broker not answering after a malformed state file"
	grep -qiE "ignored|not restored" "$T/xwayd.log" ||
		fail "no warning for state file: $bad ($(cat "$T/xwayd.log"))"
done
echo "PASS: first connection after a broker restart accelerated; stale and malformed state refused"
