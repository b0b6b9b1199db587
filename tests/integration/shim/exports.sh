#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Check that libxway.so exports exactly the interposed calls: the symbols
# of `nm -D --defined-only` == the names in shim/libxway.map == the
# XWAY_CALL entries of shim/calls.def.
set -u
cd "$(dirname "$0")/../../.."
B=${B:-build}
lib=$B/libxway.so
[ -f "$lib" ] || { echo "missing $lib"; exit 1; }
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^LIBXWAY\|^$' | sort >"$t/nm"
sed -n 's/^ *\([A-Za-z_0-9]*\);$/\1/p' shim/libxway.map | sort >"$t/map"
sed -n 's/^XWAY_CALL([^,]*, *\([A-Za-z_0-9]*\),.*/\1/p' shim/calls.def | sort >"$t/def"
ok=1
diff -u "$t/map" "$t/nm" >/dev/null || { echo "export list differs from nm -D:"; diff -u "$t/map" "$t/nm"; ok=0; }
diff -u "$t/def" "$t/map" >/dev/null || { echo "calls.def differs from libxway.map:"; diff -u "$t/def" "$t/map"; ok=0; }
[ $ok = 1 ] && echo "exports: $(wc -l <"$t/nm") symbols, all interposed calls and nothing else"
[ $ok = 1 ]
