#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The RESULT lines of xway-tcpbench, read once for make bench and make demo.

`results.py table PLAIN SHIM [KEY...]` prints the kernel-TCP-vs-shim ratio
table of two xway-tcpbench outputs (only KEYs if given); other scripts
import load() and ROWS.
"""
import sys

# key, name, unit, lower is better
ROWS = [("stream_64", "stream 64 B writes", "MB/s", False),
        ("stream_65536", "stream 64 KiB writes", "MB/s", False),
        ("pingpong_p50_us", "ping-pong 64 B p50", "us", True),
        ("pingpong_p99_us", "ping-pong 64 B p99", "us", True),
        ("churn_conn_s", "connections (64 B, close)", "/s", False)]


def load(path):
    """{key: value} of the `RESULT key value` lines of one run."""
    r = {}
    with open(path) as f:
        for line in f:
            if line.startswith("RESULT "):
                _, k, v = line.split()
                r[k] = float(v)
    return r


def table(plain, shim, only=()):
    print(f"  {'':24} {'kernel TCP':>14} {'shim':>14} {'ratio':>9}")
    for k, name, unit, lower in ROWS:
        if only and k not in only:
            continue
        if k in plain and k in shim and plain[k] > 0:
            ratio = shim[k] / plain[k]
            note = "(lower is better)" if lower else ""
            print(f"  {name:24} {plain[k]:10.2f} {unit:4}{shim[k]:10.2f} {unit:4}"
                  f"{ratio:8.2f}x {note}")


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[1] != "table":
        sys.exit("usage: results.py table PLAIN SHIM [KEY...]")
    table(load(sys.argv[2]), load(sys.argv[3]), set(sys.argv[4:]))
