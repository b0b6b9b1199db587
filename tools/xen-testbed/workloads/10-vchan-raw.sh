#!/bin/bash
# SPDX-License-Identifier: MIT
# Raw libxenvchan between the two domUs (no xway code): a verified transfer
# client -> server and a ping-pong, first with blocking waits (event
# channel), then polling.  Keys are prefixed with the mode.
set -u -o pipefail
role=$1
rc=0
for mode in block poll; do
	flag=; [ $mode = poll ] && flag=--poll
	if [ "$role" = server ]; then
		"$TB_BIN/xtb-vchan" server --vchan "$TB_PEER_DOMID" "$TB_VCHAN_DIR/xtb-$mode" \
			--ring "$TB_VCHAN_RING" --timeout "$TB_PROBE_TIMEOUT" $flag
	else
		"$TB_BIN/xtb-vchan" client --vchan "$TB_PEER_DOMID" "$TB_VCHAN_DIR/xtb-$mode" \
			--bytes "$TB_BYTES" --pings "$TB_PINGS" --timeout "$TB_PROBE_TIMEOUT" $flag
	fi | sed "s/^/$mode./" || rc=1
done
exit $rc
