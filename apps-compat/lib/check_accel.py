#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Acceleration check for one apps-compat case.

Reads `xwayctl connections --json --socket SOCK` from the case's private
broker (so every connection listed belongs to the case) and decides whether
the application's traffic really moved onto shared memory: every connection
must be accelerated (or closed after acceleration) on the local backend, the
channel byte counts summed over all connections must cover the payload in
each direction, and the kernel TCP byte counters of those connections (as
reported at close, or `ss -tin` while still open) must show almost none of
it.  A connection that stayed on TCP fails the check unless its reason is
listed with --allow-tcp (the case then documents why).
Exit 0 when the check passes, 1 otherwise; it prints one line per connection.
"""
import argparse
import json
import re
import subprocess
import sys
import time

# Kernel TCP may carry a little besides payload (nothing in the design, but
# e.g. a shim that falls back for a trailing byte must still be caught): the
# budget is 1% of the payload plus one page, so tiny payloads are not judged
# on noise.
TCP_FRACTION = 0.01
TCP_SLACK = 4096
# Connection lines printed in full; the rest are counted by kind.
MAX_LINES = 12


def get_json(args):
    # xwayctl's usage is `xwayctl <command> [--json] [--socket PATH]`: the
    # command comes first (options before it are rejected).
    cmd = [args.xwayctl, "connections", "--json", "--socket", args.socket]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        sys.exit(f"check_accel: cannot run {' '.join(cmd)}: {e}")
    if out.returncode != 0:
        sys.exit(f"check_accel: {' '.join(cmd)} exited {out.returncode}: "
                 f"{out.stderr.strip()[:400]}")
    try:
        doc = json.loads(out.stdout)
        conns = doc["connections"]
        if not isinstance(conns, list):
            raise TypeError("connections is not a list")
    except (ValueError, KeyError, TypeError) as e:
        sys.exit(f"check_accel: bad JSON from xwayctl ({e}): {out.stdout[:400]!r}")
    return conns


def ss_counters():
    """Map (local, peer) -> (bytes_acked, bytes_received) for live sockets."""
    res = {}
    try:
        out = subprocess.run(["ss", "-Htin"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return res
    key = None
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 5 and not line[0].isspace():
            key = (f[3].replace("[::ffff:", "").replace("]", ""),
                   f[4].replace("[::ffff:", "").replace("]", ""))
            continue
        if key is None:
            continue
        acked = re.search(r"\bbytes_acked:(\d+)", line)
        recv = re.search(r"\bbytes_received:(\d+)", line)
        # bytes_acked counts the SYN's sequence number too: subtract it.
        res[key] = (max(int(acked.group(1)) - 1, 0) if acked else 0,
                    int(recv.group(1)) if recv else 0)
        key = None
    return res


def num(v):
    return v if isinstance(v, int) and v >= 0 else None


def tcp_payload(c, live):
    """Bytes the kernel TCP connection carried each way, or None if unknown."""
    cl, sv = c.get("client") or {}, c.get("server") or {}
    c2s = [num(cl.get("tcp_bytes_sent")), num(sv.get("tcp_bytes_received"))]
    s2c = [num(sv.get("tcp_bytes_sent")), num(cl.get("tcp_bytes_received"))]
    ca, sa = cl.get("addr"), sv.get("addr")
    if ca and sa:
        if (ca, sa) in live:
            c2s.append(live[(ca, sa)][0]); s2c.append(live[(ca, sa)][1])
        if (sa, ca) in live:
            s2c.append(live[(sa, ca)][0]); c2s.append(live[(sa, ca)][1])
    c2s = [v for v in c2s if v is not None]
    s2c = [v for v in s2c if v is not None]
    if not c2s or not s2c:
        return None
    return max(c2s), max(s2c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--xwayctl", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--c2s", type=int, required=True, help="payload client->server")
    ap.add_argument("--s2c", type=int, required=True, help="payload server->client")
    ap.add_argument("--min-conns", type=int, default=1)
    ap.add_argument("--any-direction", action="store_true",
                    help="check the two directions' sum only: in active-mode FTP the "
                         "server connects to the client, so an upload is server->client "
                         "in the broker's terms")
    ap.add_argument("--allow-tcp", action="append", default=[],
                    help="fallback reason accepted (documented by the case)")
    ap.add_argument("--all", action="store_true", help="print every connection")
    ap.add_argument("--settle", type=float, default=10.0,
                    help="seconds to wait for pending connections to resolve")
    args = ap.parse_args()

    deadline = time.monotonic() + args.settle
    while True:
        conns = get_json(args)
        if not any(c.get("state") == "pending" for c in conns) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    live = ss_counters()

    bad = []
    shown = 0
    kinds = {}
    sum_c2s = sum_s2c = tcp_c2s = tcp_s2c = 0
    unknown_tcp = 0
    ok_conns = 0
    for c in conns:
        st, be = c.get("state"), c.get("backend")
        cl, sv = c.get("client") or {}, c.get("server") or {}
        b1, b2 = num(c.get("bytes_c2s")) or 0, num(c.get("bytes_s2c")) or 0
        tp = tcp_payload(c, live)
        line = (f"  conn {c.get('id')} {cl.get('addr')}(pid {cl.get('pid')}) -> "
                f"{sv.get('addr')}(pid {sv.get('pid')}) state={st} backend={be} "
                f"chan c2s={b1} s2c={b2} tcp={tp} reason={c.get('reason')!r}"
                f"{' detail=' + repr(c.get('detail')) if c.get('detail') else ''}")
        if shown < MAX_LINES or args.all:
            print(line)
        shown += 1
        kinds[(st, be, c.get("reason"))] = kinds.get((st, be, c.get("reason")), 0) + 1
        if st in ("accelerated", "closed") and be == "local":
            ok_conns += 1
        elif st == "fallback" and c.get("reason") in args.allow_tcp:
            print(f"    (stayed on TCP, allowed: {c.get('reason')})")
            continue
        else:
            bad.append(f"conn {c.get('id')} {cl.get('addr')} -> {sv.get('addr')} "
                       f"state={st} backend={be} reason={c.get('reason')!r}")
        sum_c2s += b1
        sum_s2c += b2
        if tp is None:
            unknown_tcp += 1
        else:
            tcp_c2s += tp[0]
            tcp_s2c += tp[1]

    if shown > MAX_LINES and not args.all:
        print(f"  ... {shown - MAX_LINES} more connections")
    for (st, be, reason), n in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {n:6d} x state={st} backend={be} reason={reason!r}")
    payload = args.c2s + args.s2c
    budget = int(payload * TCP_FRACTION) + TCP_SLACK
    print(f"  total: {len(conns)} connections, {ok_conns} accelerated; channel "
          f"c2s={sum_c2s} (need >= {args.c2s}) s2c={sum_s2c} (need >= {args.s2c}); "
          f"kernel TCP payload c2s={tcp_c2s} s2c={tcp_s2c} (budget {budget})")
    if ok_conns < args.min_conns:
        bad.append(f"only {ok_conns} accelerated connection(s), need >= {args.min_conns}")
    if args.any_direction:
        if sum_c2s + sum_s2c < args.c2s + args.s2c:
            bad.append(f"channel carried {sum_c2s + sum_s2c} bytes in all, payload is "
                       f"{args.c2s + args.s2c}")
    else:
        if sum_c2s < args.c2s:
            bad.append(f"channel carried {sum_c2s} bytes client->server, payload is {args.c2s}")
        if sum_s2c < args.s2c:
            bad.append(f"channel carried {sum_s2c} bytes server->client, payload is {args.s2c}")
    if unknown_tcp:
        bad.append(f"{unknown_tcp} connection(s) without kernel TCP counters "
                   "(tcp_bytes_* null and not visible in ss -tin)")
    if tcp_c2s + tcp_s2c > budget:
        bad.append(f"kernel TCP carried {tcp_c2s + tcp_s2c} payload bytes (budget {budget})")
    # Totals first, then individual connections (which may be many).
    bad.sort(key=lambda b: b.startswith("conn "))
    for b in bad[:MAX_LINES]:
        print(f"  FAIL: {b}")
    if len(bad) > MAX_LINES:
        print(f"  FAIL: ... and {len(bad) - MAX_LINES} more")
    if not bad:
        print("  acceleration: ok")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
