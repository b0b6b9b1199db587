#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Redis driver for apps-compat/redis: a minimal RESP client on plain
# sockets (so values are binary and compared byte for byte, which redis-cli's
# text output cannot do).  Run under the shim by run.sh.
#   kv.py gen DIR          write DIR/load.resp (mass-insertion input for
#                          redis-cli --pipe) with known, incompressible values
#   kv.py fork PORT SAVES XWAYCTL SOCK
#                          open 4 long-lived connections, check the loaded
#                          data, then SAVES times: BGSAVE (the forked child
#                          inherits every client socket, closes them, exits)
#                          while all 4 connections keep writing and reading;
#                          finally verify every value through the SAME
#                          connections and through new ones, that each
#                          long-lived connection still has its CLIENT ID,
#                          and (XWAYCTL not '-') that the broker still shows
#                          each of them accelerated and open.
# Prints the payload byte counts (c2s s2c) for the acceleration check.
import hashlib, json, socket, subprocess, sys, time

NKEYS = 4000
BIG = 4            # 4 values of 256 KiB on top


def value(i):
    # Deterministic, incompressible, 64 B .. ~1.6 KiB (plus BIG large ones).
    n = 1 << 18 if i < BIG else 64 + (i * 397) % 1536
    seed = hashlib.sha256(b"xway-redis-%d" % i).digest()
    out = bytearray()
    c = 0
    while len(out) < n:
        out += hashlib.sha256(seed + c.to_bytes(4, "little")).digest()
        c += 1
    return bytes(out[:n])


def resp(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""
        self.sent = self.recvd = 0

    def _fill(self):
        d = self.s.recv(1 << 16)
        if not d:
            raise RuntimeError("server closed the connection")
        self.recvd += len(d)
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+", b":"):
            return int(rest) if t == b":" else rest
        if t == b"-":
            raise RuntimeError("redis error: %r" % rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if t == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise RuntimeError("bad reply line %r" % line)

    def cmd(self, *args):
        m = resp(*args)
        self.s.sendall(m)
        self.sent += len(m)
        return self.reply()

    def pipeline(self, cmds):
        m = b"".join(resp(*c) for c in cmds)
        self.s.sendall(m)
        self.sent += len(m)
        return [self.reply() for _ in cmds]


def info(c, key):
    for line in c.cmd("INFO", "persistence").decode().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError("INFO has no " + key)


def verify(c, keys, expect, what):
    for lo in range(0, len(keys), 200):
        chunk = keys[lo:lo + 200]
        got = c.pipeline([("GET", k) for k in chunk])
        for k, g in zip(chunk, got):
            if g != expect[k]:
                sys.exit("%s: key %s: got %s bytes, want %d (%s)" % (
                    what, k, None if g is None else len(g), len(expect[k]),
                    "missing" if g is None else "content differs"))


def main():
    if sys.argv[1] == "gen":
        with open(sys.argv[2] + "/load.resp", "wb") as f:
            for i in range(NKEYS):
                f.write(resp("SET", "k:%d" % i, value(i)))
        return
    port, saves, xwayctl, sock = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    expect = {("k:%d" % i).encode(): value(i) for i in range(NKEYS)}
    keys = sorted(expect)
    conns = [Conn(port) for _ in range(4)]
    ids = [c.cmd("CLIENT", "ID") for c in conns]
    for j, c in enumerate(conns):
        verify(c, keys[j::4], expect, "before the saves, conn %d" % j)
    print("loaded data verified through 4 connections", file=sys.stderr)

    ctl = conns[0]
    for n in range(saves):
        before = int(info(ctl, "rdb_last_save_time"))
        done0 = int(info(ctl, "rdb_changes_since_last_save"))
        r = ctl.cmd("BGSAVE")
        if not r.startswith(b"Background saving started"):
            sys.exit("BGSAVE %d: %r" % (n, r))
        # Work on every connection while the child lives (rdb-key-save-delay
        # keeps it alive for a while): new keys with known values, reads.
        rounds = 0
        deadline = time.monotonic() + 60
        while True:
            if rounds >= 100:
                # Enough writes: new keys would only lengthen the save.
                time.sleep(0.05)
            for j, c in enumerate(conns if rounds < 100 else []):
                k = ("w:%d:%d:%d" % (n, j, rounds)).encode()
                v = hashlib.sha256(k).digest() * (1 + rounds % 40)
                r = c.pipeline([("SET", k, v), ("GET", k), ("GET", keys[(rounds * 7 + j) % NKEYS])])
                if r[0] != b"OK" or r[1] != v or r[2] != expect[keys[(rounds * 7 + j) % NKEYS]]:
                    sys.exit("during BGSAVE %d: conn %d round %d: wrong reply" % (n, j, rounds))
                expect[k] = v
            rounds += rounds < 100
            if info(ctl, "rdb_bgsave_in_progress") == "0":
                break
            if time.monotonic() > deadline:
                sys.exit("BGSAVE %d still running after 60 s" % n)
        if info(ctl, "rdb_last_bgsave_status") != "ok":
            sys.exit("BGSAVE %d failed (rdb_last_bgsave_status)" % n)
        print("BGSAVE %d done (%d rounds of writes on 4 connections while the child ran; "
              "changes before %d, last save %d -> %s)" % (
                  n, rounds, done0, before, info(ctl, "rdb_last_save_time")), file=sys.stderr)
        if rounds < 2:
            sys.exit("BGSAVE %d: the child was gone before the clients worked (rounds=%d)" % (n, rounds))

    keys = sorted(expect)
    for j, c in enumerate(conns):
        verify(c, keys[j::4], expect, "after the saves, same conn %d" % j)
        if c.cmd("CLIENT", "ID") != ids[j]:
            sys.exit("conn %d: CLIENT ID changed: the connection was replaced" % j)
    news = [Conn(port) for _ in range(2)]
    for j, c in enumerate(news):
        verify(c, keys[j::2], expect, "after the saves, new conn %d" % j)
    dbsize = news[0].cmd("DBSIZE")
    if dbsize != len(expect):
        sys.exit("DBSIZE %d, want %d" % (dbsize, len(expect)))
    print("%d keys verified byte for byte through the 4 long-lived and 2 new connections"
          % len(expect), file=sys.stderr)

    if xwayctl != "-":
        out = subprocess.run([xwayctl, "connections", "--json", "--socket", sock],
                             capture_output=True, timeout=30, check=True).stdout
        doc = json.loads(out)
        rows = doc if isinstance(doc, list) else doc.get("connections", [])
        for j, c in enumerate(conns):
            me = "%s:%d" % c.s.getsockname()[:2]
            st = [r.get("state") for r in rows if (r.get("client") or {}).get("addr") == me]
            if st != ["accelerated"]:
                sys.exit("long-lived conn %d (%s): broker states %r, want ['accelerated'] "
                         "(still open and on the channel after %d forks exited)" % (j, me, st, saves))
        print("broker: the 4 long-lived connections are still accelerated", file=sys.stderr)
    for c in conns + news:
        c.s.close()
    print(sum(c.sent for c in conns + news), sum(c.recvd for c in conns + news))


main()
