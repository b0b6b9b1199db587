#!/bin/bash
# SPDX-License-Identifier: MIT
# xway's own Xen channel backend (shim/chan/xen.c on libxenvchan, loaded with
# dlopen), driven by the channel engineer's xway-vchan-test: the client
# streams TB_BYTES of a pattern the server verifies byte by byte, then
# TB_PINGS 64-byte ping-pongs.  Skipped while the tool is not built.
# The tool's client does not retry, so the client waits until the server's
# vchan is published in xenstore (libxenvchan writes event-channel last).
set -u -o pipefail
role=$1
. "$TB_LIB"
tool=$TB_BIN/xway-vchan-test
path=$TB_VCHAN_DIR/xway-test
if [ ! -x "$tool" ]; then
	echo "skip: $tool not present (xway-vchan-test not built)" >&2
	exit 77
fi
bytes=$(numfmt --from=iec "$TB_BYTES") || { echo "bad TB_BYTES $TB_BYTES" >&2; exit 2; }
if [ "$role" = server ]; then
	"$tool" server -d "$TB_PEER_DOMID" -x "$path" -T 120 > /tmp/xvt.out
	rc=$?
else
	wait_for 120 xenstore-read "$path/event-channel" \
		|| { echo "the server never published $path" >&2; exit 1; }
	"$tool" client -d "$TB_PEER_DOMID" -x "$path" -b "$bytes" -n "$TB_PINGS" -T 120 > /tmp/xvt.out
	rc=$?
fi
cat /tmp/xvt.out >&2
# "RESULT role=client bytes=N MBps=X checksum=ok ..." -> xway_KEY=VALUE lines
sed -n 's/^RESULT //p' /tmp/xvt.out | tr ' ' '\n' | grep '=' | sed 's/^/xway_/'
exit $rc
