#!/bin/bash
# SPDX-License-Identifier: MIT
# xway's own Xen channel backend (shim/chan/xen.c on libxenvchan), driven by
# the channel engineer's tools/bench/xway-vchan-test: checksummed transfer
# and ping-pong between the domUs.  Skipped while that tool is not built.
set -u -o pipefail
role=$1
tool=$TB_BIN/xway-vchan-test
if [ ! -x "$tool" ]; then
	echo "skip: $tool not present (tools/bench/xway-vchan-test not built yet)" >&2
	exit 77
fi
if [ "$role" = server ]; then
	"$tool" server --peer "$TB_PEER_DOMID" --path "$TB_VCHAN_DIR/xway-test" \
		--bytes "$TB_BYTES" --pings "$TB_PINGS"
else
	"$tool" client --peer "$TB_PEER_DOMID" --path "$TB_VCHAN_DIR/xway-test" \
		--bytes "$TB_BYTES" --pings "$TB_PINGS"
fi
