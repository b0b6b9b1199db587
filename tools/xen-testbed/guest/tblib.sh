# SPDX-License-Identifier: MIT
# Helpers shared by the test bed's scripts inside the guests (dom0 and the
# domUs) and by the workloads: progress lines, the kernel command line,
# bounded waits, and a barrier between the two domUs through xenstore.
#
# The barrier: each domU writes keys under its own
# /local/domain/<self>/data/xway-testbed/ and reads the peer's.  dom0 made
# that directory readable by the peer before unpausing the domUs; nodes the
# owner creates below it inherit those permissions.

TB_BOOT_T0=${TB_BOOT_T0:-$(cut -d' ' -f1 /proc/uptime)}

# Progress line with the guest's uptime (seconds since its kernel started).
say() { printf '[xtb %s %6ss] %s\n' "${TB_ROLE:-?}" "$(cut -d' ' -f1 /proc/uptime)" "$*"; }

# cmdline KEY: value of KEY=value on the kernel command line.
cmdline() {
	local w
	for w in $(cat /proc/cmdline); do
		case "$w" in "$1="*) echo "${w#*=}"; return 0 ;; esac
	done
	return 1
}

# wait_for SECONDS COMMAND...: run COMMAND every half second until it
# succeeds; fail after SECONDS.
wait_for() {
	local limit=$1 i=0; shift
	while ! "$@" > /dev/null 2>&1; do
		i=$((i + 1))
		[ $i -ge $((limit * 2)) ] && return 1
		sleep 0.5
	done
	return 0
}

# The domUs' shared area.  xenstore node names allow only letters,
# digits and "-/_@": anything else in NAME becomes "_".
tb_key()  { local n=$2; echo "/local/domain/$1/data/xway-testbed/${n//[^A-Za-z0-9\/_@-]/_}"; }

# tb_signal NAME [VALUE]: publish NAME to the peer.
tb_signal() { xenstore-write "$(tb_key "$TB_SELF_DOMID" "$1")" "${2:-1}"; }

# tb_wait NAME SECONDS: wait until the peer published NAME; print its value.
tb_wait() {
	wait_for "$2" xenstore-read "$(tb_key "$TB_PEER_DOMID" "$1")" || return 1
	xenstore-read "$(tb_key "$TB_PEER_DOMID" "$1")"
}

# tb_barrier NAME SECONDS: both domUs reach NAME before either goes on.
tb_barrier() {
	tb_signal "$1" && tb_wait "$1" "$2" > /dev/null
}
