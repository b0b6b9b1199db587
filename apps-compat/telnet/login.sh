#!/bin/sh
# SPDX-License-Identifier: MIT
# The "login program" telnetd runs on its pty for the apps-compat telnet case
# (telnetd -E): no password, no shell.  It puts the pty in raw mode, says
# READY, reads NLINES base64 lines typed by the client and answers with their
# sha256, then sends the base64 of the download file between BEGIN and END,
# in chunks of 4000 lines, each followed by "MORE k" and a wait for the
# client's "k" line, so bulk output and keystroke round trips alternate as
# in an interactive session.
# Usage (from inetd.conf): login.sh NLINES DOWNLOAD-FILE
n=$1 down=$2
stty raw -echo
printf 'READY\n'
head -n "$n" | tr -d '\r\000' | base64 -d > "${TMPDIR:-/tmp}/xway-telnet-up.$$" 2>/dev/null
printf 'UPSHA %s\n' "$(sha256sum < "${TMPDIR:-/tmp}/xway-telnet-up.$$" | cut -d' ' -f1)"
rm -f "${TMPDIR:-/tmp}/xway-telnet-up.$$"
tmp=${TMPDIR:-/tmp}/xway-telnet-down.$$
mkdir "$tmp" || exit 1
base64 -w 76 "$down" | split -l 4000 -a 5 - "$tmp/c."
printf 'BEGIN\n'
k=0
for c in "$tmp"/c.*; do
	cat "$c"
	k=$((k + 1))
	printf 'MORE %d\n' "$k"
	read -r ack || break
done
printf 'END\n'
rm -rf "$tmp"
sleep 0.5
