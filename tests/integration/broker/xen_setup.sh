#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tools/xen-setup/xway-xen-setup against stand-in xenstore-* commands (a
# directory tree; chmod calls are logged): adding domains creates their
# entries with the right owner and readers, adding a third re-grants read
# to all, removing one drops it everywhere, bad input exits 2.
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
"$tool" list | grep -q '^3 ' || fail "list"
"$tool" --dry-run add 9 | grep -q "xenstore-write /local/xway/9" || fail "dry-run"
[ -d "$XS/local/xway/9" ] && fail "dry-run wrote"
"$tool" add abc >/dev/null 2>&1; [ $? = 2 ] || fail "bad domid not exit 2"
"$tool" frob >/dev/null 2>&1; [ $? = 2 ] || fail "bad command not exit 2"
"$tool" >/dev/null 2>&1; [ $? = 2 ] || fail "no args not exit 2"
echo PASS
