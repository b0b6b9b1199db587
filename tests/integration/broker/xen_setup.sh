#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tools/xen-setup/xway-xen-setup against stand-in xenstore-* commands (a
# directory tree; chmod calls are logged): adding domains creates their
# entries with the right owner and readers, adding a third re-grants read
# to all, removing one drops it everywhere, bad input exits 2; `sync`
# removes the participants whose /local/domain/<d> is gone and `watch` does
# it at each @releaseDomain event (a stand-in watch fed through a FIFO).
set -u
tool=$PWD/tools/xen-setup/xway-xen-setup
[ -x "$tool" ] || { echo "SKIP: $tool missing"; exit 77; }
T=$(mktemp -d /tmp/xway-xs.XXXXXX)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/bin" "$T/store"
export XS="$T/store" XSLOG="$T/chmod.log"
cat >"$T/bin/xenstore-read" <<'SH'
#!/bin/sh
[ -e "$XS$1" ] || exit 1; [ -d "$XS$1" ] && exit 0; cat "$XS$1"
SH
cat >"$T/bin/xenstore-write" <<'SH'
#!/bin/sh
mkdir -p "$XS$1"; [ -n "$2" ] && printf %s "$2" > "$XS$1/.value"; exit 0
SH
cat >"$T/bin/xenstore-list" <<'SH'
#!/bin/sh
[ -d "$XS$1" ] || exit 1; ls "$XS$1"
SH
cat >"$T/bin/xenstore-rm" <<'SH'
#!/bin/sh
rm -rf "$XS$1"
SH
cat >"$T/bin/xenstore-chmod" <<'SH'
#!/bin/sh
echo "$*" >> "$XSLOG"
SH
# The watch: the path once at registration, then one line per event
# written to $XSWATCH; ends when the writer closes it.
cat >"$T/bin/xenstore-watch" <<'SH'
#!/bin/sh
echo "$1"; cat "$XSWATCH"
SH
chmod +x "$T/bin"/*
export PATH="$T/bin:$PATH"
fail() { echo "FAIL: $*"; cat "$XSLOG" 2>/dev/null; exit 1; }

"$tool" add 1 2 || fail "add 1 2"
[ -d "$XS/local/xway/1" ] && [ -d "$XS/local/xway/2" ] || fail "entries not created"
grep -qx "/local/xway n0 r1 r2" "$XSLOG" || fail "root perms"
grep -qx -- "-r /local/xway/1 n1 r2" "$XSLOG" || fail "entry 1 perms"
grep -qx -- "-r /local/xway/2 n2 r1" "$XSLOG" || fail "entry 2 perms"
: > "$XSLOG"
"$tool" add 3 || fail "add 3"
grep -qx -- "-r /local/xway/1 n1 r2 r3" "$XSLOG" || fail "entry 1 not re-granted to 3"
grep -qx -- "-r /local/xway/3 n3 r1 r2" "$XSLOG" || fail "entry 3 perms"
: > "$XSLOG"
"$tool" remove 2 || fail "remove 2"
[ -d "$XS/local/xway/2" ] && fail "entry 2 still there"
grep -qx -- "-r /local/xway/1 n1 r3" "$XSLOG" || fail "entry 1 still readable by 2"
grep -qx -- "-r /local/xway/2 n0 r1 r3" "$XSLOG" || fail "removed entry 2 not handed to dom0, readable by 1 and 3, before its removal"
"$tool" list | grep -q '^3 ' || fail "list"
"$tool" --dry-run add 9 | grep -q "xenstore-write /local/xway/9" || fail "dry-run"
[ -d "$XS/local/xway/9" ] && fail "dry-run wrote"
# sync: domain 3 is gone (no /local/domain/3), domain 1 is alive.
mkdir -p "$XS/local/domain/1/domid"
"$tool" sync 2>/dev/null || fail "sync"
[ -d "$XS/local/xway/3" ] && fail "sync kept the gone domain 3"
[ -d "$XS/local/xway/1" ] || fail "sync removed the living domain 1"
# A dying domain (xl list state "d": a zombie whose pages another domain
# still maps) is gone too; an xl that fails is not a reason.
cat >"$T/bin/xl" <<'SH'
#!/bin/sh
[ "$1" = list ] || exit 1
case $2 in
6) printf 'Name ID Mem VCPUs State Time(s)\n(null) 6 0 1 --p--d 1.0\n' ;;
7) exit 1 ;;
*) printf 'Name ID Mem VCPUs State Time(s)\ndom%s %s 512 1 -b---- 1.0\n' "$2" "$2" ;;
esac
SH
chmod +x "$T/bin/xl"
mkdir -p "$XS/local/domain/6/domid" "$XS/local/domain/7/domid"
"$tool" add 6 7 || fail "add 6 7"
"$tool" sync 2>/dev/null || fail "sync with xl"
[ -d "$XS/local/xway/6" ] && fail "sync kept the dying domain 6"
[ -d "$XS/local/xway/7" ] || fail "sync removed domain 7 on an xl failure"
[ -d "$XS/local/xway/1" ] || fail "sync with xl removed the living domain 1"
"$tool" remove 7 || fail "remove 7"
# watch: domains 1, 4, 5 alive; 5 dies, then an event comes.
mkdir -p "$XS/local/domain/4/domid" "$XS/local/domain/5/domid"
"$tool" add 4 5 || fail "add 4 5"
export XSWATCH="$T/watch.fifo"
mkfifo "$XSWATCH"
"$tool" watch 2> "$T/watch.err" &
wpid=$!
exec 7> "$XSWATCH"
sleep 0.3
[ -d "$XS/local/xway/5" ] || fail "watch removed a living domain at start"
rm -rf "$XS/local/domain/5"
echo @releaseDomain >&7
for _ in $(seq 50); do [ -d "$XS/local/xway/5" ] || break; sleep 0.1; done
[ -d "$XS/local/xway/5" ] && fail "watch did not remove the gone domain 5"
[ -d "$XS/local/xway/4" ] && [ -d "$XS/local/xway/1" ] || fail "watch removed a living domain"
exec 7>&-
for _ in $(seq 50); do kill -0 $wpid 2>/dev/null || break; sleep 0.1; done
kill -0 $wpid 2>/dev/null && { kill $wpid; fail "watch did not end with its watch"; }
wait $wpid; [ $? = 1 ] || fail "watch's end is not an error (systemd would not restart it)"
"$tool" add abc >/dev/null 2>&1; [ $? = 2 ] || fail "bad domid not exit 2"
"$tool" frob >/dev/null 2>&1; [ $? = 2 ] || fail "bad command not exit 2"
"$tool" >/dev/null 2>&1; [ $? = 2 ] || fail "no args not exit 2"
echo PASS
