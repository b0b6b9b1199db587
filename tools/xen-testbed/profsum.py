#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Summarise an `strace -f -T -tt` log (XEN_TESTBED_PROFILE=1 writes them to
raw/<role>/prof.app.strace and prof.broker.strace): per system call, how many
calls and how much time inside them, in total and per connection.

    tools/xen-testbed/profsum.py FILE [CONNECTIONS] [--top N]

Time inside a call is strace's <seconds>; a call split by strace into
"unfinished" and "resumed" halves is counted once, with the resumed half's
time.  Blocking waits (poll, ppoll, epoll_wait, futex, accept, read on an
idle descriptor) are listed like any other call: read them as waiting.
"""
import re
import sys
from collections import defaultdict

LINE = re.compile(r'^(?:\[pid\s+)?(\d+)\]?\s+(\d+:\d+:\d+\.\d+)\s+(.*)$')
CALL = re.compile(r'^([a-z_0-9]+)\(')
RESUMED = re.compile(r'^<\.\.\. ([a-z_0-9]+) resumed>')
TIME = re.compile(r'<(\d+\.\d+)>\s*$')


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = argv[1]
    conns = 1
    top = 40
    rest = argv[2:]
    if rest and rest[0].isdigit():
        conns = max(1, int(rest[0]))
        rest = rest[1:]
    if len(rest) >= 2 and rest[0] == '--top':
        top = int(rest[1])
    count = defaultdict(int)
    secs = defaultdict(float)
    with open(path, errors='replace') as f:
        for line in f:
            m = LINE.match(line.rstrip('\n'))
            if not m:
                continue
            body = m.group(3)
            if body.startswith('+++') or body.startswith('---'):
                continue
            r = RESUMED.match(body)
            if r:
                name = r.group(1)
            else:
                c = CALL.match(body)
                if not c:
                    continue
                name = c.group(1)
                if body.endswith('<unfinished ...>'):
                    count[name] += 1
                    continue
            if not r:
                count[name] += 1
            t = TIME.search(body)
            if t:
                secs[name] += float(t.group(1))
    total_n = sum(count.values())
    total_s = sum(secs.values())
    print('%s: %d calls, %.3f s inside them; per connection (%d): %.1f calls, %.2f ms'
          % (path, total_n, total_s, conns, total_n / conns, total_s * 1000 / conns))
    print('%-22s %10s %10s %12s %12s' % ('call', 'calls', 'per conn', 'ms total', 'ms per conn'))
    for name in sorted(count, key=lambda k: -secs[k])[:top]:
        print('%-22s %10d %10.1f %12.2f %12.3f'
              % (name, count[name], count[name] / conns, secs[name] * 1000,
                 secs[name] * 1000 / conns))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
