#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# MariaDB under the shim over TCP 127.0.0.1 (never the Unix socket: every
# client uses --protocol=tcp), with a private datadir made by
# mariadb-install-db.  mariadbd is started as its systemd unit does (in the
# foreground, switching to the mysql user; a thread per connection,
# recvfrom(MSG_DONTWAIT)/sendto, SO_RCVTIMEO/SO_SNDTIMEO).  Checks: 20000
# rows inserted and read back byte-exact, a 16 MiB blob sent as hex and read
# back (its SHA2 computed by the server must match too), and a short
# mysqlslap load at concurrency 4.
. "$(dirname "$0")/../lib/common.sh"
compat_init mysql
compat_need mariadbd mariadb mariadb-install-db mysqlslap

port=$(free_port)
mkdir -p "$T/data" "$T/run"
chown mysql:mysql "$T/data" "$T/run"
mariadb-install-db --no-defaults --datadir="$T/data" --user=mysql \
	--auth-root-authentication-method=normal --skip-test-db >"$T/log/install-db" 2>&1 \
	|| fail "mariadb-install-db failed"
compat_bg mariadbd /usr/sbin/mariadbd --no-defaults --datadir="$T/data" --user=mysql \
	--port="$port" --bind-address=127.0.0.1 --socket="$T/run/mysqld.sock" \
	--pid-file="$T/run/mariadbd.pid" --skip-name-resolve --log-error="$T/run/mariadbd-error" \
	--innodb-buffer-pool-size=64M --max-allowed-packet=64M --skip-log-bin
# The error log lives in the mysql-owned directory; show it with the others.
ln -s "$T/run/mariadbd-error.err" "$T/log/mariadbd-error"
wait_port "$port" 60 "$BG_PID"
preloaded "$BG_PID" mariadbd

DB=(--no-defaults --protocol=tcp -h 127.0.0.1 -P "$port" -u root)
sql() {  # sql OUT QUERY-FILE-or-'-e QUERY': run the client under the shim
	local out=$1; shift
	bounded 120 mariadb "${DB[@]}" --max-allowed-packet=64M -N -B "$@" \
		>"$out" 2>>"$T/log/client" || fail "mariadb client failed: $(tail -n 3 "$T/log/client")"
}

# Rows: generated here, inserted in batches, read back ordered and compared.
python3 - "$T" <<'PY'
import hashlib, sys
t = sys.argv[1]
with open(f"{t}/rows.sql", "w") as q, open(f"{t}/rows.expected", "w") as e:
    q.write("CREATE DATABASE xc; USE xc;\n"
            "CREATE TABLE kv (id INT PRIMARY KEY, v CHAR(64) NOT NULL, n BIGINT NOT NULL) ENGINE=InnoDB;\n")
    for b in range(20):
        vals = []
        for i in range(b * 1000, (b + 1) * 1000):
            v = hashlib.sha256(str(i).encode()).hexdigest()
            n = i * i - 7 * i
            vals.append(f"({i},'{v}',{n})")
            e.write(f"{i}\t{v}\t{n}\n")
        q.write("INSERT INTO kv VALUES " + ",".join(vals) + ";\n")
PY
sql "$T/out-create" < "$T/rows.sql"
sql "$T/rows.got" -e 'SELECT id, v, n FROM xc.kv ORDER BY id'
cmp -s "$T/rows.expected" "$T/rows.got" || fail "rows read back differ from rows inserted"
sql "$T/agg" -e 'SELECT COUNT(*), SUM(id), SUM(n) FROM xc.kv'
want=$(python3 -c 'print(f"20000\t{sum(range(20000))}\t{sum(i*i-7*i for i in range(20000))}")')
[ "$(cat "$T/agg")" = "$want" ] || fail "aggregate: got '$(cat "$T/agg")', want '$want'"
log "20000 rows: read back byte-exact, aggregates ok"

# Blob: 16 MiB of random bytes as a hex literal (32 MiB of SQL up), then
# read back as hex (32 MiB down); the server's own SHA2 must agree.
mkdata "$T/blob.bin" 16
{ printf 'CREATE TABLE xc.blobs (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB;\nINSERT INTO xc.blobs VALUES (1, 0x'
  od -An -v -tx1 "$T/blob.bin" | tr -d ' \n'; printf ');\n'; } > "$T/blob.sql"
sql "$T/out-blob" < "$T/blob.sql"
sql "$T/blob.hex" -e 'SELECT HEX(b) FROM xc.blobs WHERE id = 1'
python3 -c 'import sys; open(sys.argv[2],"wb").write(bytes.fromhex(open(sys.argv[1]).read().strip()))' \
	"$T/blob.hex" "$T/blob.got" || fail "blob read back is not hex"
same "$T/blob.bin" "$T/blob.got" "16 MiB blob"
sql "$T/blob.sha" -e 'SELECT SHA2(b, 256) FROM xc.blobs WHERE id = 1'
[ "$(cat "$T/blob.sha")" = "$(sha "$T/blob.bin")" ] || fail "server-side SHA2 of the blob differs"

# Load: mysqlslap, 4 clients, auto-generated mixed queries.
bounded 120 mysqlslap "${DB[@]}" --concurrency=4 --iterations=2 \
	--number-of-queries=400 --auto-generate-sql --auto-generate-sql-load-type=mixed \
	>"$T/log/mysqlslap" 2>&1 || fail "mysqlslap failed: $(tail -n 3 "$T/log/mysqlslap")"
grep -q 'Average number of seconds to run all queries' "$T/log/mysqlslap" || fail "mysqlslap printed no result"
log "mysqlslap: $(grep -m1 'Average number of seconds' "$T/log/mysqlslap" | sed 's/^[[:space:]]*//')"

blob=$(stat -c%s "$T/blob.bin")
# Payload floor: the blob's hex both ways (rows and slap traffic on top).
# Connections: 7 mariadb clients + mysqlslap (4 clients x 2 iterations + its
# own set-up connection).
check_accel $((2 * blob)) $((2 * blob)) 15
pass "mariadb $(pkg_version mariadb-server)"
