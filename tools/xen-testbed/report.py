#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Turn the Xen test bed's raw results into results.txt and a verdict.

Reads RAW/server/* and RAW/client/* (what domu.sh wrote in each domU:
<workload>.<role> key=value files with status and NIC/TCP counters before
and after) and RAW/dom0.status, checks every workload passed on both sides,
checks that the raw vchan transfer's bytes did not cross the bridge (the
netfront NIC counters moved by less than 1% of the bytes transferred while
the TCP comparison moved them by at least the bytes transferred), that
xway's cross-domain connections (50-xway-xen) were accelerated on both
brokers with their payload off TCP and off the bridge, that an unshimmed
client stays on verified plain TCP (55-xway-xen-plain), and
writes the ratios of raw vchan against netfront TCP in the same run, marked
as emulated.  Exit status 0 only if every check passed.
"""
import argparse
import os
import re
import sys

EMULATED = ("EMULATED: Xen 4.17 under QEMU TCG (software CPU emulation). "
            "Figures are functional evidence; ratios are between transports "
            "of the same run, not real Xen performance.")


def read_kv(path):
    kv = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if "=" in line and not line.startswith("#"):
                    k, v = line.split("=", 1)
                    kv[k] = v
    except OSError:
        return None
    return kv


def num(kv, key):
    try:
        return float(kv[key])
    except (KeyError, TypeError, ValueError):
        return None


def delta(kv, key):
    a, b = num(kv, "after_" + key), num(kv, "before_" + key)
    return None if a is None or b is None else int(a - b)


def ratio(a, b):
    return "n/a" if not a or not b else f"{a / b:.2f}x"


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if float(v).is_integer():
        return f"{int(v)}{unit}"
    return f"{v:.1f}{unit}"


TABLE_ROW = re.compile(r"^(ID +STATE|[0-9a-f]{16} )")


def log_tail(path, n=14):
    """The last n lines of a workload's stderr that are not xwayctl table rows."""
    try:
        with open(path, errors="replace") as f:
            lines = [l.rstrip()[:200] for l in f if not TABLE_ROW.match(l)]
    except OSError:
        return []
    return [l for l in lines if l][-n:]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("raw")
    ap.add_argument("out")
    ap.add_argument("--elapsed", type=int, default=None)
    ap.add_argument("--only", default="",
                    help="workload name prefixes this run was limited to (XEN_TESTBED_ONLY)")
    args = ap.parse_args()
    only = args.only.replace(",", " ").split()

    def selected(wl):
        return not only or any(wl.startswith(p) for p in only)

    lines, failures = [], []
    say = lines.append

    def fail(msg):
        failures.append(msg)

    say("xway Xen test bed results")
    say(EMULATED)
    if args.elapsed is not None:
        say(f"run time: {args.elapsed} s")

    dom0 = ""
    try:
        with open(os.path.join(args.raw, "dom0.status")) as f:
            dom0 = f.read().split()
    except OSError:
        pass
    say(f"dom0: {' '.join(dom0) or 'no status (dom0 never got to the test bed script)'}")
    if dom0 != ["finished"]:
        fail(f"dom0 status {' '.join(dom0) or 'missing'}")

    res = {}
    domu_status = {}
    for role in ("server", "client"):
        d = os.path.join(args.raw, role)
        try:
            with open(os.path.join(d, "domu.status")) as f:
                status = f.read().strip()
        except OSError:
            status = "missing"
        info = read_kv(os.path.join(d, "domu.info")) or {}
        say(f"{role} domU: status {status}; domid {info.get('domid', '?')}, "
            f"kernel {info.get('kernel', '?')}, Xen {info.get('xen_version', '?')}")
        domu_status[role] = status
        names = set()
        if os.path.isdir(d):
            for n in os.listdir(d):
                if n.endswith("." + role):
                    names.add(n[: -len(role) - 1])
        for n in names:
            res.setdefault(n, {})[role] = read_kv(os.path.join(d, f"{n}.{role}"))

    # 90-xway-xen-vanish destroys the client domU on purpose (it is the
    # last workload): its status and that workload's client result are
    # then absent by design, once the server side passed.
    van = (res.get("90-xway-xen-vanish") or {}).get("server") or {}
    vanished = van.get("status") == "pass" and van.get("vanish.server_exited") == "1"
    for role in ("server", "client"):
        if domu_status[role] != "done" and not (role == "client" and vanished):
            fail(f"{role} domU status {domu_status[role]}")

    say("")
    say(f"{'workload':<22}{'server':<10}{'client':<10}")
    for n in sorted(res):
        row = []
        for role in ("server", "client"):
            kv = res[n].get(role)
            row.append(kv.get("status", "?") if kv else "missing")
        if n == "90-xway-xen-vanish" and vanished:
            row[1] = "destroyed"
        say(f"{n:<22}{row[0]:<10}{row[1]:<10}")
        if n == "90-xway-xen-vanish" and vanished:
            continue
        if any(s not in ("pass", "skip") for s in row) or row[0] != row[1]:
            fail(f"workload {n}: server {row[0]}, client {row[1]}")
    if "10-vchan-raw" not in res:
        if selected("10-vchan-raw"):
            fail("workload 10-vchan-raw did not run")

    def get(wl, role):
        return (res.get(wl) or {}).get(role) or {}

    # ---- raw vchan vs netfront TCP, same program, same run --------------
    vc, tc = get("10-vchan-raw", "client"), get("30-tcp-netfront", "client")
    vs, ts = get("10-vchan-raw", "server"), get("30-tcp-netfront", "server")
    say("")
    say("raw libxenvchan vs netfront TCP (xtb-vchan, same sizes, same run):")
    for mode in ("block", "poll"):
        for side, kv in (("client", vc), ("server", vs)):
            if kv.get("status") == "pass" and (kv.get(f"{mode}.xfer_ok") != "1"
                                               or kv.get(f"{mode}.pp_ok") != "1"):
                fail(f"10-vchan-raw {mode} {side}: transfer or ping-pong not verified")
        vm, tm = num(vc, f"{mode}.xfer_MBps"), num(tc, f"{mode}.xfer_MBps")
        vl, tl = num(vc, f"{mode}.pp_p50_us"), num(tc, f"{mode}.pp_p50_us")
        vl99, tl99 = num(vc, f"{mode}.pp_p99_us"), num(tc, f"{mode}.pp_p99_us")
        say(f"  {mode:<5} transfer  vchan {fmt(vm, ' MB/s'):>14}   tcp {fmt(tm, ' MB/s'):>14}"
            f"   vchan/tcp {ratio(vm, tm)} (emulated)")
        say(f"  {mode:<5} ping p50  vchan {fmt(vl, ' us'):>14}   tcp {fmt(tl, ' us'):>14}"
            f"   tcp/vchan {ratio(tl, vl)} (emulated)")
        say(f"  {mode:<5} ping p99  vchan {fmt(vl99, ' us'):>14}   tcp {fmt(tl99, ' us'):>14}")
    say(f"  verified bytes: vchan {fmt(num(vc, 'block.xfer_bytes'))} + {fmt(num(vc, 'poll.xfer_bytes'))}"
        f", checksums {vc.get('block.xfer_checksum', '?')} / {vc.get('poll.xfer_checksum', '?')}"
        f" (server: {vs.get('block.xfer_checksum', '?')} / {vs.get('poll.xfer_checksum', '?')})")

    ip = get("40-iperf3", "client")
    if ip.get("status") == "pass":
        mbps = num(ip, "iperf3_receiver_Mbps")
        vm = num(vc, "block.xfer_MBps")
        say(f"  iperf3 over netfront: {fmt(mbps, ' Mbit/s')}; raw vchan (block) "
            f"{fmt(vm * 8 if vm else None, ' Mbit/s')}: vchan/iperf3 "
            f"{ratio(vm * 8 if vm else None, mbps)} (emulated)")

    xw, xws = get("20-xway-vchan", "client"), get("20-xway-vchan", "server")
    if xw.get("status") == "pass":
        for side, kv in (("client", xw), ("server", xws)):
            if kv.get("xway_checksum") != "ok":
                fail(f"20-xway-vchan {side}: checksum {kv.get('xway_checksum', 'missing')}")
        xm, xl = num(xw, "xway_MBps"), num(xw, "xway_p50_us")
        tm, tl = num(tc, "block.xfer_MBps"), num(tc, "block.pp_p50_us")
        vm, vl = num(vc, "block.xfer_MBps"), num(vc, "block.pp_p50_us")
        say(f"  xway Xen backend (xway-vchan-test, {fmt(num(xw, 'xway_bytes'))} B verified,"
            f" {fmt(num(xw, 'xway_rounds'))} pings):")
        say(f"        transfer  xway  {fmt(xm, ' MB/s'):>14}   xway/tcp {ratio(xm, tm)},"
            f" xway/raw vchan (block) {ratio(xm, vm)} (emulated)")
        say(f"        ping p50  xway  {fmt(xl, ' us'):>14}   tcp/xway {ratio(tl, xl)},"
            f" raw vchan (block)/xway {ratio(vl, xl)} (emulated)")
    elif "20-xway-vchan" in res:
        say(f"  xway Xen channel backend: {xw.get('status', 'missing')} "
            "(see raw/client/20-xway-vchan.client.log)")

    for role in ("server", "client"):
        lo = get("05-xway-local", role)
        if lo.get("status") == "pass":
            say(f"  xway local mode inside the {role} domU (loopback, shim + xwayd):"
                f" transfer {fmt(num(lo, 'local.xfer_MBps'), ' MB/s')},"
                f" ping p50 {fmt(num(lo, 'local.pp_p50_us'), ' us')},"
                f" channel carried {fmt(num(lo, 'local.chan_bytes_c2s'))} B (emulated)")

    # ---- xway across domains (50-xway-xen, 55-xway-xen-plain) ------------
    xc, xs_ = get("50-xway-xen", "client"), get("50-xway-xen", "server")
    say("")
    say("xway between the domUs (shim + xwayd in Xen mode on both, 50-xway-xen):")
    if "50-xway-xen" not in res:
        if selected("50-xway-xen"):
            fail("workload 50-xway-xen did not run")
    elif xc.get("status") != "pass" or xs_.get("status") != "pass":
        fail(f"50-xway-xen: server {xs_.get('status', 'missing')}, client "
             f"{xc.get('status', 'missing')} (a skip is a failure here)")
    else:
        xb = num(xc, "xen.bytes") or 0
        # c2s: client domU -> listener in the server domU; s2c: the reverse.
        for d, cli, srv in (("c2s", xc, xs_), ("s2c", xs_, xc)):
            ok = (cli.get(f"{d}.client.xfer_ok") == "1" and cli.get(f"{d}.client.pp_ok") == "1"
                  and srv.get(f"{d}.server.xfer_ok") == "1")
            if not ok:
                fail(f"50-xway-xen {d}: transfer or ping-pong not verified")
            say(f"  {d}: {fmt(num(cli, f'{d}.client.xfer_bytes'))} B verified "
                f"{'OK' if ok else 'NOT OK'}, transfer {fmt(num(cli, f'{d}.client.xfer_MBps'), ' MB/s')}"
                f" (tcp {fmt(num(tc, 'block.xfer_MBps'), ' MB/s')}: "
                f"{ratio(num(cli, f'{d}.client.xfer_MBps'), num(tc, 'block.xfer_MBps'))}),"
                f" ping p50 {fmt(num(cli, f'{d}.client.pp_p50_us'), ' us')} (emulated)")
        for side, kv in (("client", xc), ("server", xs_)):
            n, tp = num(kv, "xen.accel_records"), num(kv, "xen.max_tcp_payload")
            say(f"  {side} broker: {fmt(n)} connection(s) with backend xen and >= {fmt(xb)} B"
                f" on the channel; largest kernel TCP payload count of them {fmt(tp)} B")
            if not n or n < 2:
                fail(f"50-xway-xen {side}: the broker shows {fmt(n)} accelerated xen connections, not 2")
            if tp is None or not xb or tp >= 0.01 * xb:
                fail(f"50-xway-xen {side}: the TCP socket of a xen connection carried {fmt(tp)} B")
    pc, ps = get("55-xway-xen-plain", "client"), get("55-xway-xen-plain", "server")
    if "55-xway-xen-plain" not in res:
        if selected("55-xway-xen-plain"):
            fail("workload 55-xway-xen-plain did not run")
    elif pc.get("status") != "pass" or ps.get("status") != "pass":
        fail("55-xway-xen-plain did not pass on both sides")
    else:
        tx = delta(pc, "tx_bytes")
        ok = (pc.get("plain.client.xfer_ok") == "1" and ps.get("xen.plain_no_offer") == "1"
              and tx is not None and tx >= (num(pc, "xen.bytes") or 1))
        say(f"  unshimmed client -> shimmed server (55-xway-xen-plain): plain TCP, verified,"
            f" server broker reason no-offer, client NIC tx {fmt(tx)} B: {'OK' if ok else 'NOT OK'}")
        if not ok:
            fail("55-xway-xen-plain: not verified plain TCP with a no-offer record")

    if "90-xway-xen-vanish" not in res:
        if selected("90-xway-xen-vanish"):
            fail("workload 90-xway-xen-vanish did not run")
    elif not vanished:
        fail(f"90-xway-xen-vanish: server {van.get('status', 'missing')}")
    else:
        say(f"  client domU destroyed mid-transfer (90-xway-xen-vanish): the server application"
            f" ended after {fmt(num(van, 'vanish.server_exit_seconds'), ' s')} (exit"
            f" {van.get('vanish.server_rc', '?')}), its broker forgot the domain:"
            f" {'yes' if van.get('vanish.broker_forgot') == '1' else 'NO'}, record says vanished:"
            f" {'yes' if van.get('vanish.record') == '1' else 'no'}")

    # Lines a workload asks to show: keys "report.<anything>" (its own
    # checks already decided pass/fail; these say what it measured).
    shown = False
    for n in sorted(res):
        for role in ("server", "client"):
            for k, v in get(n, role).items():
                if k.startswith("report."):
                    if not shown:
                        say("")
                        say("workload reports:")
                        shown = True
                    say(f"  {n} {role}: {v}")

    # ---- did the vchan bytes cross the bridge? ---------------------------
    say("")
    say("netfront NIC counters (enX0) during each workload, rx+tx bytes / TCP segments:")
    for n in sorted(res):
        parts = []
        for role in ("server", "client"):
            kv = get(n, role)
            b = [delta(kv, "rx_bytes"), delta(kv, "tx_bytes")]
            s = [delta(kv, "tcp_InSegs"), delta(kv, "tcp_OutSegs")]
            parts.append(f"{role} {fmt(sum(b) if None not in b else None)} B"
                         f" / {fmt(sum(s) if None not in s else None)} segs")
        say(f"  {n:<20} " + ";  ".join(parts))
    # Shared-memory workloads: the NIC must not carry their bytes.
    shm = [("10-vchan-raw", sum(v for v in (num(vc, "block.xfer_bytes"),
                                            num(vc, "poll.xfer_bytes")) if v)),
           ("20-xway-vchan", num(get("20-xway-vchan", "client"), "xway_bytes") or 0),
           ("50-xway-xen", 2 * (num(get("50-xway-xen", "client"), "xen.bytes") or 0))]
    for wl, moved in shm:
        if get(wl, "client").get("status") != "pass":
            continue
        crossed = False
        for role in ("server", "client"):
            kv = get(wl, role)
            b = [delta(kv, "rx_bytes"), delta(kv, "tx_bytes")]
            if None in b:
                crossed = True
                fail(f"{wl} {role}: no NIC counters")
                continue
            if not moved or sum(b) >= 0.01 * moved:
                crossed = True
                fail(f"{wl} {role}: the NIC moved {sum(b)} bytes while the channel "
                     f"moved {int(moved)}: the bytes may have crossed the bridge")
        say(f"  {wl}: the channel moved {int(moved)} bytes; NIC traffic during it must stay"
            f" under 1% of that: {'NOT OK' if crossed else 'OK'}")
    tmoved = sum(v for v in (num(tc, "block.xfer_bytes"), num(tc, "poll.xfer_bytes")) if v)
    if tc.get("status") == "pass":
        tx = delta(tc, "tx_bytes")
        # The counters must see TCP traffic, or the check above proves nothing.
        ok = tx is not None and tx >= tmoved
        say(f"  control: the TCP comparison moved {int(tmoved)} bytes; client NIC tx {fmt(tx)} B: "
            f"{'counters see TCP traffic' if ok else 'NOT OK'}")
        if not ok:
            fail("30-tcp-netfront: the NIC counters did not see the TCP transfer")

    say("")
    if failures:
        say("FAIL:")
        for f in failures:
            say(f"  - {f}")
        # CI shows only the tail of the run: the failed workloads' own words
        # (their stderr, without xwayctl's tables) go last, so the cause is
        # in that tail and not only in the disk image.
        for n in sorted(res):
            for role in ("server", "client"):
                kv = res[n].get(role)
                if not kv or kv.get("status") in ("pass", "skip"):
                    continue
                why = log_tail(os.path.join(args.raw, role, f"{n}.{role}.log"))
                say(f"{n} {role}, last words:")
                for line in why or ["(no stderr)"]:
                    say(f"  > {line}")
    else:
        say("PASS: every workload passed on both domUs and the vchan bytes stayed off the bridge")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
