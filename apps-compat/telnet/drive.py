#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Drive the telnet client for the apps-compat telnet case.

Starts COMMAND (the real telnet client, possibly under the shim) with pipes,
waits for the remote READY, types the upload file as base64 lines, and
collects what the remote prints: the sha256 of what it received (UPSHA) and
the download file between BEGIN and END, which it decodes into OUT.
Exit 0 when both directions arrived intact, 1 otherwise (with the reason).
Usage: drive.py UPLOAD OUT DOWNLOAD-SHA256 TIMEOUT -- COMMAND...
"""
import base64
import hashlib
import re
import subprocess
import sys
import threading
import time


def main():
    up, out, want_down, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    cmd = sys.argv[sys.argv.index("--") + 1:]
    data = open(up, "rb").read()
    lines = base64.encodebytes(data)  # 76-character lines, each ends in \n
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    buf = bytearray()
    lock = threading.Lock()

    def reader():
        while True:
            chunk = p.stdout.read1(65536)
            if not chunk:
                return
            with lock:
                buf.extend(chunk)

    threading.Thread(target=reader, daemon=True).start()
    deadline = time.monotonic() + limit

    def wait_for(pattern, start=0):
        """Search buf[start:] until PATTERN shows up, the client exits or
        time runs out; offsets in the match are relative to START."""
        while time.monotonic() < deadline:
            with lock:
                m = re.search(pattern, bytes(buf[start:]), re.S)
            if m:
                return m
            if p.poll() is not None:
                time.sleep(0.2)  # let the reader drain
                with lock:
                    m = re.search(pattern, bytes(buf[start:]), re.S)
                return m
            time.sleep(0.01)
        return None

    def finish(msg, rc):
        try:
            p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        with open(out + ".raw", "wb") as f:
            f.write(bytes(buf))
        print(msg, file=sys.stderr)
        return rc

    if not wait_for(rb"READY\r?\n"):
        return finish("telnet: no READY from the remote login program", 1)
    try:
        p.stdin.write(lines)
        p.stdin.flush()
    except OSError as e:
        return finish(f"telnet: typing the upload failed: {e}", 1)
    m = wait_for(rb"UPSHA ([0-9a-f]{64})")
    if not m:
        return finish("telnet: no UPSHA from the remote", 1)
    if m.group(1).decode() != hashlib.sha256(data).hexdigest():
        return finish("telnet: upload arrived altered (sha256 differs)", 1)
    # The remote sends the download in chunks, each closed by "MORE k", and
    # waits for "k" before the next (pacing; see login.sh).
    m = wait_for(rb"BEGIN\r?\n")
    if not m:
        return finish("telnet: no BEGIN from the remote", 1)
    pos, k, body = m.end(), 0, bytearray()
    while True:
        # Markers start a line (base64 text may contain "END" too): search
        # from the newline before POS, which always ends the previous line.
        start = pos - 1
        m = wait_for(rb"\n(?:MORE (\d+)|END)\r?\n", start)
        if not m:
            return finish(f"telnet: download stopped after chunk {k}", 1)
        with lock:
            body += buf[pos:start + m.start() + 1]
        pos = start + m.end()
        if m.group(1) is None:
            break
        k += 1
        if int(m.group(1)) != k:
            return finish(f"telnet: chunk {m.group(1)} arrived, expected {k}", 1)
        try:
            p.stdin.write(b"%d\n" % k)
            p.stdin.flush()
        except OSError as e:
            return finish(f"telnet: acknowledging chunk {k} failed: {e}", 1)
    body = bytes(body).replace(b"\r", b"").replace(b"\0", b"")
    try:
        got = base64.b64decode(body, validate=False)
    except ValueError as e:
        return finish(f"telnet: download is not base64: {e}", 1)
    with open(out, "wb") as f:
        f.write(got)
    if hashlib.sha256(got).hexdigest() != want_down:
        return finish(f"telnet: download altered ({len(got)} bytes, sha256 differs)", 1)
    return finish(f"telnet: {len(data)} bytes up and {len(got)} bytes down intact", 0)


if __name__ == "__main__":
    sys.exit(main())
