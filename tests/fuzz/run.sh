#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build tests/fuzz/fuzz_proto.c with clang's libFuzzer (+ASan/UBSan) and run
# it for a bounded time ($XWAY_FUZZ_SECONDS, default 30) from a small seed
# corpus of valid messages.  Any crash fails.  Skips (77) if clang or
# libFuzzer is missing.
set -u
B=${B:-build}
SECS=${XWAY_FUZZ_SECONDS:-30}
CLANG=$(command -v clang || command -v clang-14 || true)
[ -n "$CLANG" ] || { echo "SKIP: clang missing"; exit 77; }
out=$B/tests/fuzz
mkdir -p "$out"
if ! "$CLANG" -g -O1 -std=gnu11 -D_GNU_SOURCE -Iinclude -Wall -Wextra -Werror \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-o "$out/fuzz_proto" tests/fuzz/fuzz_proto.c 2>"$out/build.log"; then
	if grep -qiE "libclang_rt.fuzzer|cannot find|unsupported option" "$out/build.log"; then
		echo "SKIP: libFuzzer runtime missing ($(head -1 "$out/build.log"))"; exit 77
	fi
	cat "$out/build.log"; exit 1
fi
corpus=$out/corpus
rm -rf "$corpus"; mkdir -p "$corpus"
python3 - "$corpus" <<'PY' || { echo "FAIL: seed generation"; exit 1; }
import struct, sys, os
d = sys.argv[1]
MAGIC, VER = 0x50574158, 1
def pkt(t, body, nfds):
    h = struct.pack("<IHHIIII", MAGIC, VER, t, 24 + len(body), 1, 0, 0)
    return bytes([nfds]) + h + body
def addr(ip4, port, fam=2):
    return bytes(10) + b"\xff\xff" + bytes(ip4) + struct.pack(">H", port) + struct.pack("<H", fam)
seeds = {
    "hello": pkt(1, struct.pack("<II", 1, 0), 0),
    "listen": pkt(2, addr([127,0,0,1], 5000), 1),
    "offer": pkt(4, addr([127,0,0,1], 5000) + addr([0,0,0,0], 40000) + struct.pack("<QII", 42, 20, 1), 4),
    "claim": pkt(5, addr([127,0,0,1], 5000) + addr([127,0,0,1], 40000), 1),
    "withdraw": pkt(6, struct.pack("<Q", 7), 0),
    "report": pkt(7, struct.pack("<IIiI", 1, 4, 0, 0) + addr([127,0,0,1], 1) + addr([127,0,0,1], 2) + struct.pack("<Qqqqq", 1, -1, -1, -1, -1) + b"text".ljust(128, b"\0"), 0),
    "query": pkt(16, struct.pack("<II", 4, 1), 0),
    "rule": b"\0port=5000-6000 addr=10.0.0.0/8 uid=33",
}
for k, v in seeds.items():
    open(os.path.join(d, k), "wb").write(v)
PY
echo "fuzzing broker/proto.c for ${SECS}s"
"$out/fuzz_proto" -max_total_time="$SECS" -max_len=70000 -rss_limit_mb=1024 \
	-print_final_stats=1 "$corpus" >"$out/fuzz.log" 2>&1
rc=$?
tail -15 "$out/fuzz.log"
[ $rc = 0 ] || { echo "FAIL: fuzzer exit $rc"; exit 1; }
grep -q "Done .* runs in" "$out/fuzz.log" || { echo "FAIL: fuzzer did not run to its time limit"; exit 1; }
echo PASS
