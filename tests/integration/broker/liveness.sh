#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Integration: a connection record ends when both sockets are gone, even
# though the process that claimed it lives on and the last holder never
# reported a close.  The shape of a shimmed sshd: the listener claims (its
# pid is the record's server pid), a child serves the connection and ends
# without a close report (sshd's session runs under a seccomp filter; here
# the child is SIGKILLed), the listener stays.  The client closes normally.
# Before, the record stayed `accelerated` for as long as the listener
# lived (the liveness check only looked at the two recorded pids); now the
# broker asks the kernel (sock_diag) for both sockets and ends it.
# Skips (77) if the binaries or python3 are missing.
set -u
cd "$(dirname "$0")/../../.."
. tests/integration/shim/lib.sh
need_bins_python

priv_broker_env liveness
ctl() { "$B/xwayctl" "$@" --socket "$SOCK"; }

cat >"$T/srv.py" <<'EOF'
import os, signal, socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
pid = os.fork()
if pid == 0:
    s.close()
    c.sendall(b"hello from the child\n")
    c.recv(100)                      # the client's "bye": then die unreported
    os.kill(os.getpid(), signal.SIGKILL)
c.close()                            # the listener's copy: not the last
os.waitpid(pid, 0)
sys.stdin.read()                     # lives on until the test ends
EOF
cat >"$T/cli.py" <<'EOF'
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
f = c.makefile("rb")
ok = f.readline() == b"hello from the child\n"
c.sendall(b"bye")
ok = ok and c.recv(100) == b""       # EOF once the child is gone
c.close()
sys.exit(0 if ok else 1)
EOF

# state PORT: the state of the (only) record to PORT.
state() {
	ctl connections --json >"$T/conns.json" 2>&1
	python3 - "$T/conns.json" "$1" <<'PY'
import json, sys
d = [c for c in json.load(open(sys.argv[1]))["connections"]
     if c["server"]["addr"].endswith(":" + sys.argv[2])]
print(d[0]["state"] + "/" + d[0]["backend"] + "/" + (d[0]["detail"] or "-") if len(d) == 1
      else "records:%d" % len(d))
PY
}

xwayd_up
mkfifo "$T/in"
shimmed python3 "$T/srv.py" <"$T/in" >"$T/port" 2>"$T/srv.log" &
spid=$!
exec 9>"$T/in"                       # the server's stdin: open until we exit
for _ in $(seq 1 250); do [ -s "$T/port" ] && break; sleep 0.02; done
port=$(cat "$T/port")
[ -n "$port" ] || fail "server did not start"
shimmed python3 "$T/cli.py" "$port" 2>"$T/cli.log" || fail "client: wrong data or no EOF"
st=$(state "$port")
case $st in accelerated/local/*|closed/local/*) ;; *) fail "not accelerated: $st" ;; esac
# The broker looks every 2 s: 10 s at most.
for _ in $(seq 1 100); do
	st=$(state "$port")
	case $st in closed/*) break ;; esac
	sleep 0.1
done
kill -0 "$spid" 2>/dev/null || fail "the listener process exited early"
case $st in
closed/local/*) ;;
*) fail "record still '$st' 10 s after both sockets closed (the listener lives)" ;;
esac
echo "PASS: record ended with both sockets gone while the claiming process lives ($st)"
