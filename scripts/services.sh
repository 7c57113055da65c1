#!/usr/bin/env bash
# scripts/services.sh — make a Redis and a PostgreSQL available for development,
# tests and CI on a Debian machine.
#
#   eval "$(scripts/services.sh)"    # ensure both; stdout: export REDIS_URL=... / export DATABASE_URL=...
#   scripts/services.sh status       # what is in use / what this script started
#   scripts/services.sh stop         # stop only what this script started; remove its state dir
#
# For each service independently:
#   1. reuse: if a server answers at $REDIS_URL / $DATABASE_URL (defaults below), use it;
#   2. start: otherwise start a throwaway server from installed binaries on a free
#      127.0.0.1 port, data under the state dir (reused by later invocations while
#      it is alive). PostgreSQL refuses to run as root, so as root it runs as the
#      system user $REDSOURCE_PG_USER (created with useradd -r if missing);
#   3. install: if the binaries are missing and we are root on Debian, apt-get
#      install redis-server / postgresql first (then reuse a server the package
#      started, if it answers at the URL, else start our own as in 2).
# Progress goes to stderr; only the export lines go to stdout. Exits non-zero
# with a message if a service cannot be made available.
#
# Environment:
#   REDIS_URL        default redis://127.0.0.1:6379/0
#   DATABASE_URL     default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
#   REDSOURCE_SERVICES_DIR   state dir (default ${TMPDIR:-/tmp}/redsource-services-$UID)
#   REDSOURCE_REDIS_SERVER   redis-server binary to use (default: from PATH)
#   REDSOURCE_PG_BINDIR      dir with initdb/pg_ctl (default: newest /usr/lib/postgresql/*/bin)
#                            (if either override does not exist the binary counts as
#                            missing: the install path runs, then the packaged one is used)
#   REDSOURCE_PG_USER        user to run PostgreSQL as when root (default redsource-pg)
#   REDSOURCE_NO_INSTALL=1   never run apt-get
# shellcheck disable=SC2016 # single-quoted sh -c scripts get their args as $1, $2
set -euo pipefail

readonly DEFAULT_REDIS_URL='redis://127.0.0.1:6379/0'
readonly DEFAULT_DATABASE_URL='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable'

STATE_DIR=${REDSOURCE_SERVICES_DIR:-${TMPDIR:-/tmp}/redsource-services-$(id -u)}
STATE_DIR=${STATE_DIR%/}
STATE_FILE=$STATE_DIR/state
PG_USER=${REDSOURCE_PG_USER:-redsource-pg}

WANT_REDIS_URL=${REDIS_URL:-$DEFAULT_REDIS_URL}
WANT_DATABASE_URL=${DATABASE_URL:-$DEFAULT_DATABASE_URL}

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- state file
# Plain KEY=VALUE lines, parsed (never sourced).
declare -A ST=()

state_load() {
	ST=()
	[ -f "$STATE_FILE" ] || return 0
	local k v
	while IFS='=' read -r k v; do
		[[ $k =~ ^[A-Z_]+$ ]] && ST[$k]=$v
	done <"$STATE_FILE"
}

state_save() {
	local tmp=$STATE_FILE.tmp.$$ k
	: >"$tmp"
	for k in "${!ST[@]}"; do
		[ -n "${ST[$k]}" ] && printf '%s=%s\n' "$k" "${ST[$k]}" >>"$tmp"
	done
	sort -o "$tmp" "$tmp"
	mv -f "$tmp" "$STATE_FILE"
}

state_dir_check() {
	# Refuse a state dir someone else owns (we read pids from it and kill them).
	if [ -L "$STATE_DIR" ] || { [ -e "$STATE_DIR" ] && [ ! -O "$STATE_DIR" ]; }; then
		die "state dir $STATE_DIR is a symlink or not owned by $(id -un); set REDSOURCE_SERVICES_DIR"
	fi
}

state_dir_ensure() {
	state_dir_check
	mkdir -p "$STATE_DIR"
	# 0755: as root, PostgreSQL runs as another user and must traverse it.
	chmod 0755 "$STATE_DIR"
}

LOCK_HELD=0
lock() {
	[ "$LOCK_HELD" = 1 ] && return 0
	state_dir_ensure
	if have flock; then
		exec 9>"$STATE_DIR/lock"
		flock -w 120 9 || die "timed out waiting for lock $STATE_DIR/lock"
	fi
	LOCK_HELD=1
}

# alive PID: the process exists and is not a zombie (pid 1 may be slow to reap).
alive() {
	kill -0 "$1" 2>/dev/null || return 1
	local st
	st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 0
	[ "${st%% *}" != Z ]
}

# pid_is PID WORD: PID is alive and its command line mentions WORD.
pid_is() {
	local pid=$1 word=$2
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	alive "$pid" || return 1
	[ -r "/proc/$pid/cmdline" ] || return 0
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$word"
}

# ------------------------------------------------------------- URL helpers
# url_hostport URL DEFAULT_PORT -> "host port" (enough for the /dev/tcp fallback)
url_hostport() {
	local url=$1 dport=$2 rest hp host port
	rest=${url#*://}
	rest=${rest%%[/?]*}
	hp=${rest##*@}
	if [[ $hp == \[*\]* ]]; then
		host=${hp%%]*}; host=${host#[}; port=${hp##*]}; port=${port#:}
	else
		host=${hp%%:*}; port=${hp#"$host"}; port=${port#:}
	fi
	printf '%s %s\n' "${host:-127.0.0.1}" "${port:-$dport}"
}

tcp_open() { # host port
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

port_free() {
	local p=$1
	if have ss; then
		! ss -Htln "sport = :$p" 2>/dev/null | grep -q .
	else
		! tcp_open 127.0.0.1 "$p"
	fi
}

# pick_port: a free loopback port below the ephemeral range, from a random base.
pick_port() {
	local base=$((20000 + RANDOM % 10000)) i p
	for ((i = 0; i < 200; i++)); do
		p=$((base + i * 7 % 2000))
		if port_free "$p"; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# ------------------------------------------------------------------ probes
# resp_ping HOST PORT: PING over bash's /dev/tcp, print the first reply line.
resp_ping() {
	local line
	exec 3<>"/dev/tcp/$1/$2" || return 1
	printf 'PING\r\n' >&3
	IFS= read -r -t 2 line <&3 || return 1
	printf '%s' "${line%$'\r'}"
}

PROBE_MSG=
redis_answers() { # url
	local url=$1 out hp host port line
	PROBE_MSG=
	if have redis-cli; then
		out=$(timeout 3 redis-cli --no-auth-warning -u "$url" ping 2>&1) || true
		[ "$out" = PONG ] && return 0
		PROBE_MSG=${out:-no answer}
		return 1
	fi
	read -r host port < <(url_hostport "$url" 6379)
	out=$(timeout 3 bash -c "$(declare -f resp_ping); resp_ping \"\$1\" \"\$2\"" _ "$host" "$port" 2>/dev/null) || true
	[ "$out" = +PONG ] && return 0
	PROBE_MSG="no PONG via /dev/tcp (redis-cli not installed): ${out:-no answer}"
	return 1
}

pg_answers() { # url
	local url=$1 out host port
	PROBE_MSG=
	if have pg_isready; then
		if ! out=$(PGCONNECT_TIMEOUT=2 timeout 4 pg_isready -d "$url" 2>&1); then
			PROBE_MSG=${out:-no answer}
			return 1
		fi
	fi
	if have psql; then
		out=$(PGCONNECT_TIMEOUT=2 timeout 5 psql "$url" -XAtqc 'select 1' 2>&1) || true
		[ "$out" = 1 ] && return 0
		PROBE_MSG="${out:-no answer}"
		return 1
	fi
	read -r host port < <(url_hostport "$url" 5432)
	if tcp_open "$host" "$port"; then
		log "psql not installed: only checked that $host:$port accepts TCP connections"
		return 0
	fi
	PROBE_MSG="nothing listening on $host:$port"
	return 1
}

# ------------------------------------------------------- binaries / install
APT_UPDATED=0
apt_install() { # packages...
	[ "${REDSOURCE_NO_INSTALL:-0}" = 1 ] && die "$* not installed and REDSOURCE_NO_INSTALL=1"
	is_root || die "not installed: $*; install with \"sudo apt-get install -y $*\" or run this script as root"
	{ [ -f /etc/debian_version ] && have apt-get; } ||
		die "$* not installed and this is not a Debian system with apt-get; install them by hand"
	export DEBIAN_FRONTEND=noninteractive
	if [ "$APT_UPDATED" = 0 ]; then
		log "running apt-get update"
		apt-get update -q >&2 || die "apt-get update failed"
		APT_UPDATED=1
	fi
	log "running apt-get install -y $*"
	apt-get install -y -q "$@" >&2 || die "apt-get install -y $* failed"
}

# find_redis_server [ignore-override] -> path
find_redis_server() {
	local c
	if [ -n "${REDSOURCE_REDIS_SERVER:-}" ] && [ "${1:-}" != ignore-override ]; then
		[ -x "$REDSOURCE_REDIS_SERVER" ] && { echo "$REDSOURCE_REDIS_SERVER"; return 0; }
		return 1
	fi
	for c in "$(command -v redis-server 2>/dev/null)" /usr/bin/redis-server /usr/sbin/redis-server /usr/local/bin/redis-server; do
		[ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
	done
	return 1
}

# find_pg_bindir [ignore-override] -> dir with initdb and pg_ctl
find_pg_bindir() {
	local d c
	if [ -n "${REDSOURCE_PG_BINDIR:-}" ] && [ "${1:-}" != ignore-override ]; then
		[ -x "$REDSOURCE_PG_BINDIR/initdb" ] && [ -x "$REDSOURCE_PG_BINDIR/pg_ctl" ] &&
			{ echo "$REDSOURCE_PG_BINDIR"; return 0; }
		return 1
	fi
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4 -V -r); do
		[ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
	done
	c=$(command -v initdb 2>/dev/null) || return 1
	d=$(dirname "$c")
	[ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
	return 1
}

# ------------------------------------------------------------------- Redis
redis_stop_started() { # stop the Redis recorded in the state file (if ours and alive)
	local pid=${ST[REDIS_PID]:-}
	if [ -n "$pid" ] && pid_is "$pid" redis-server; then
		log "stopping Redis pid $pid (port ${ST[REDIS_PORT]:-?})"
		kill -TERM "$pid" 2>/dev/null || true
		local i
		for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
		if alive "$pid"; then
			log "Redis pid $pid did not exit; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	[ -n "${ST[REDIS_DIR]:-}" ] && [[ ${ST[REDIS_DIR]} == "$STATE_DIR"/* ]] && rm -rf -- "${ST[REDIS_DIR]}"
	ST[REDIS_PID]='' ST[REDIS_PORT]='' ST[REDIS_URL]='' ST[REDIS_DIR]=''
}

redis_start() { # redis-server binary
	local bin=$1 dir port url attempt pid i
	dir=$STATE_DIR/redis
	rm -rf -- "$dir"
	mkdir -p "$dir"
	for attempt in 1 2 3 4 5; do
		port=$(pick_port) || die "no free port found for Redis"
		url="redis://127.0.0.1:$port/0"
		log "Redis: starting $bin on 127.0.0.1:$port (data in $dir)"
		rm -f "$dir/redis.pid"
		"$bin" --bind 127.0.0.1 --port "$port" --daemonize yes \
			--dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
			--appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
			--save "" >&2 9>&- || true # 9>&-: the daemon must not inherit the lock fd
		for ((i = 0; i < 100; i++)); do
			if [ -s "$dir/redis.pid" ] && redis_answers "$url"; then
				pid=$(<"$dir/redis.pid")
				ST[REDIS_PID]=$pid ST[REDIS_PORT]=$port ST[REDIS_URL]=$url ST[REDIS_DIR]=$dir
				state_save
				log "Redis: started pid $pid at $url"
				OUT_REDIS_URL=$url
				return 0
			fi
			sleep 0.1
		done
		log "Redis did not come up on port $port (attempt $attempt); log tail:"
		tail -n 5 "$dir/redis.log" >&2 2>/dev/null || true
		[ -s "$dir/redis.pid" ] && pid_is "$(<"$dir/redis.pid")" redis-server && kill "$(<"$dir/redis.pid")" 2>/dev/null || true
	done
	die "could not start redis-server (see $dir/redis.log)"
}

# reuse_redis: set OUT_REDIS_URL to a Redis that answers (the requested one, or one
# started earlier by this script); leave it empty if one must be started.
reuse_redis() {
	if redis_answers "$WANT_REDIS_URL"; then
		if [ "${ST[REDIS_URL]:-}" = "$WANT_REDIS_URL" ]; then
			log "Redis: reusing $WANT_REDIS_URL (started earlier by this script, pid ${ST[REDIS_PID]:-?})"
		else
			log "Redis: reusing $WANT_REDIS_URL"
		fi
		OUT_REDIS_URL=$WANT_REDIS_URL
		return 0
	fi
	log "Redis: nothing usable at $WANT_REDIS_URL (${PROBE_MSG//$'\n'/ })"
	lock
	state_load
	if [ -n "${ST[REDIS_URL]:-}" ]; then
		if pid_is "${ST[REDIS_PID]:-}" redis-server && redis_answers "${ST[REDIS_URL]}"; then
			log "Redis: reusing ${ST[REDIS_URL]} (started earlier by this script, pid ${ST[REDIS_PID]})"
			OUT_REDIS_URL=${ST[REDIS_URL]}
			return 0
		fi
		log "Redis: the one started earlier (${ST[REDIS_URL]}) is gone; cleaning up"
		redis_stop_started
		state_save
	fi
}

# -------------------------------------------------------------- PostgreSQL
# as_pg CMD...: run as the PostgreSQL user (ourselves unless root), from a dir it
# can read, without the lock fd (a daemon inheriting it would hold the lock forever).
as_pg() {
	if is_root; then
		if have runuser; then
			(cd / && runuser -u "$PG_USER" -- "$@") 9>&-
		else
			(cd / && su -s /bin/sh "$PG_USER" -c "$(printf '%q ' "$@")") 9>&-
		fi
	else
		(cd / && "$@") 9>&-
	fi
}

pg_run_as() { if is_root; then echo "$PG_USER"; else id -un; fi; }

pg_user_ensure() {
	is_root || return 0
	id -u "$PG_USER" >/dev/null 2>&1 && return 0
	have useradd || die "useradd not found; cannot create user $PG_USER to run PostgreSQL (it refuses to run as root)"
	log "creating system user $PG_USER to run PostgreSQL (it refuses to run as root)"
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin "$PG_USER" || id -u "$PG_USER" >/dev/null 2>&1 ||
		die "useradd $PG_USER failed"
}

pg_stop_started() {
	local pid=${ST[PG_PID]:-} data=${ST[PG_DATA]:-} bindir=${ST[PG_BINDIR]:-} i
	if [ -n "$pid" ] && pid_is "$pid" postgres; then
		log "stopping PostgreSQL pid $pid (port ${ST[PG_PORT]:-?})"
		if [ -n "$data" ] && [ -x "$bindir/pg_ctl" ]; then
			as_pg "$bindir/pg_ctl" -D "$data" -m fast -w -t 30 stop >&2 || true
		fi
		if pid_is "$pid" postgres; then
			kill -INT "$pid" 2>/dev/null || true
			for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
			alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	[ -n "${ST[PG_BASE]:-}" ] && [[ ${ST[PG_BASE]} == "$STATE_DIR"/* ]] && rm -rf -- "${ST[PG_BASE]}"
	ST[PG_PID]='' ST[PG_PORT]='' ST[PG_URL]='' ST[PG_DATA]='' ST[PG_BASE]='' ST[PG_BINDIR]='' ST[PG_USER]=''
}

pg_start() { # bindir with initdb/pg_ctl
	local bindir=$1 base data sock port url attempt pid
	pg_user_ensure
	base=$STATE_DIR/pg
	data=$base/data
	sock=$base/sock
	rm -rf -- "$base"
	mkdir -p "$base" "$sock"
	if is_root; then
		chown -R "$PG_USER:" "$base"
		as_pg test -w "$base" ||
			die "user $PG_USER cannot write $base (a parent dir is not traversable?); set REDSOURCE_SERVICES_DIR to a dir under /tmp"
	fi
	# Unix socket paths are limited to ~107 bytes; go TCP-only if ours would be too long.
	[ ${#sock} -gt 80 ] && sock=
	log "PostgreSQL: initdb in $data ($bindir, as $(pg_run_as))"
	as_pg "$bindir/initdb" -D "$data" --auth=trust -U postgres -E UTF8 --locale=C --no-sync \
		>"$STATE_DIR/pg-initdb.log" 2>&1 || {
		tail -n 20 "$STATE_DIR/pg-initdb.log" >&2
		die "initdb failed (full log: $STATE_DIR/pg-initdb.log)"
	}
	as_pg sh -c 'printf "%s\n" "include = '\''redsource.conf'\''" >>"$1/postgresql.conf"' _ "$data"
	for attempt in 1 2 3 4 5; do
		port=$(pick_port) || die "no free port found for PostgreSQL"
		url="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
		as_pg sh -c 'cat >"$1/redsource.conf"' _ "$data" <<-EOF
			# written by scripts/services.sh: throwaway test server
			listen_addresses = '127.0.0.1'
			port = $port
			unix_socket_directories = '$sock'
			max_connections = 200
			fsync = off
			synchronous_commit = off
			full_page_writes = off
		EOF
		log "PostgreSQL: starting on 127.0.0.1:$port"
		if as_pg "$bindir/pg_ctl" -D "$data" -l "$base/postgres.log" -w -t 60 start >/dev/null 2>&1 &&
			pg_answers "$url"; then
			pid=$(head -n 1 "$data/postmaster.pid")
			ST[PG_PID]=$pid ST[PG_PORT]=$port ST[PG_URL]=$url ST[PG_DATA]=$data
			ST[PG_BASE]=$base ST[PG_BINDIR]=$bindir ST[PG_USER]=$(pg_run_as)
			state_save
			log "PostgreSQL: started pid $pid at $url"
			OUT_DATABASE_URL=$url
			return 0
		fi
		log "PostgreSQL did not come up on port $port (attempt $attempt); log tail:"
		tail -n 5 "$base/postgres.log" >&2 2>/dev/null || true
		as_pg "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
	done
	die "could not start PostgreSQL (see $base/postgres.log)"
}

# reuse_pg: like reuse_redis, for OUT_DATABASE_URL.
reuse_pg() {
	if pg_answers "$WANT_DATABASE_URL"; then
		if [ "${ST[PG_URL]:-}" = "$WANT_DATABASE_URL" ]; then
			log "PostgreSQL: reusing $WANT_DATABASE_URL (started earlier by this script, pid ${ST[PG_PID]:-?})"
		else
			log "PostgreSQL: reusing $WANT_DATABASE_URL"
		fi
		OUT_DATABASE_URL=$WANT_DATABASE_URL
		return 0
	fi
	log "PostgreSQL: nothing usable at $WANT_DATABASE_URL (${PROBE_MSG//$'\n'/ })"
	lock
	state_load
	if [ -n "${ST[PG_URL]:-}" ]; then
		if pid_is "${ST[PG_PID]:-}" postgres && pg_answers "${ST[PG_URL]}"; then
			log "PostgreSQL: reusing ${ST[PG_URL]} (started earlier by this script, pid ${ST[PG_PID]})"
			OUT_DATABASE_URL=${ST[PG_URL]}
			return 0
		fi
		log "PostgreSQL: the one started earlier (${ST[PG_URL]}) is gone; cleaning up"
		pg_stop_started
		state_save
	fi
}

# ---------------------------------------------------------------- commands
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; } # single-quote for the shell

cmd_up() {
	OUT_REDIS_URL='' OUT_DATABASE_URL=''
	# Read the state file (if any) without locking, only to label reuse.
	if [ -f "$STATE_FILE" ]; then state_dir_check; state_load; fi
	reuse_redis
	reuse_pg

	# What must be started, and are its binaries installed?
	local redis_bin='' pg_bindir='' pkgs=()
	if [ -z "$OUT_REDIS_URL" ] && ! redis_bin=$(find_redis_server); then
		if [ -n "${REDSOURCE_REDIS_SERVER:-}" ]; then
			log "REDSOURCE_REDIS_SERVER=$REDSOURCE_REDIS_SERVER is not an executable"
		else
			log "redis-server not found"
		fi
		pkgs+=(redis-server)
	fi
	if [ -z "$OUT_DATABASE_URL" ] && ! pg_bindir=$(find_pg_bindir); then
		if [ -n "${REDSOURCE_PG_BINDIR:-}" ]; then
			log "REDSOURCE_PG_BINDIR=$REDSOURCE_PG_BINDIR has no initdb/pg_ctl"
		else
			log "PostgreSQL server binaries (initdb, pg_ctl) not found"
		fi
		pkgs+=(postgresql)
	fi
	if [ ${#pkgs[@]} -gt 0 ]; then
		apt_install "${pkgs[@]}"
		# A server the package started may now answer where we were asked to
		# look (Debian starts one where it may); reuse it, else start our own.
		if [ -z "$OUT_REDIS_URL" ] && [ -z "$redis_bin" ]; then
			if redis_answers "$WANT_REDIS_URL"; then
				log "Redis: reusing the server the package started at $WANT_REDIS_URL"
				OUT_REDIS_URL=$WANT_REDIS_URL
			else
				redis_bin=$(find_redis_server ignore-override) ||
					die "redis-server still not found after apt-get install"
			fi
		fi
		if [ -z "$OUT_DATABASE_URL" ] && [ -z "$pg_bindir" ]; then
			if pg_answers "$WANT_DATABASE_URL"; then
				log "PostgreSQL: reusing the server the package started at $WANT_DATABASE_URL"
				OUT_DATABASE_URL=$WANT_DATABASE_URL
			else
				pg_bindir=$(find_pg_bindir ignore-override) ||
					die "initdb/pg_ctl still not found after apt-get install"
			fi
		fi
	fi
	[ -n "$OUT_REDIS_URL" ] || redis_start "$redis_bin"
	[ -n "$OUT_DATABASE_URL" ] || pg_start "$pg_bindir"
	[ -n "$OUT_REDIS_URL" ] || die "Redis is not available"
	[ -n "$OUT_DATABASE_URL" ] || die "PostgreSQL is not available"
	printf 'export REDIS_URL=%s\n' "$(sq "$OUT_REDIS_URL")"
	printf 'export DATABASE_URL=%s\n' "$(sq "$OUT_DATABASE_URL")"
}

cmd_stop() {
	if [ ! -e "$STATE_DIR" ]; then
		log "nothing to stop (no state dir $STATE_DIR)"
		return 0
	fi
	lock
	state_load
	if [ -z "${ST[REDIS_URL]:-}${ST[PG_URL]:-}" ]; then
		log "this script started nothing (state dir $STATE_DIR)"
	fi
	[ -n "${ST[REDIS_URL]:-}${ST[REDIS_PID]:-}" ] && redis_stop_started
	[ -n "${ST[PG_URL]:-}${ST[PG_PID]:-}" ] && pg_stop_started
	rm -rf -- "$STATE_DIR"
	log "removed $STATE_DIR"
}

cmd_status() {
	local s
	if [ -f "$STATE_FILE" ]; then state_dir_check; state_load; fi
	echo "state dir: $STATE_DIR$([ -f "$STATE_FILE" ] || echo ' (none)')"
	if [ -n "${ST[REDIS_URL]:-}" ]; then
		pid_is "${ST[REDIS_PID]:-}" redis-server && s=running || s=GONE
		echo "started Redis:      ${ST[REDIS_URL]} pid ${ST[REDIS_PID]:-?} ($s) data ${ST[REDIS_DIR]:-?}"
	fi
	if [ -n "${ST[PG_URL]:-}" ]; then
		pid_is "${ST[PG_PID]:-}" postgres && s=running || s=GONE
		echo "started PostgreSQL: ${ST[PG_URL]} pid ${ST[PG_PID]:-?} ($s) data ${ST[PG_DATA]:-?} user ${ST[PG_USER]:-?}"
	fi
	redis_answers "$WANT_REDIS_URL" && s=answers || s="not answering: ${PROBE_MSG//$'\n'/ }"
	echo "REDIS_URL=$WANT_REDIS_URL ($s)"
	pg_answers "$WANT_DATABASE_URL" && s=answers || s="not answering: ${PROBE_MSG//$'\n'/ }"
	echo "DATABASE_URL=$WANT_DATABASE_URL ($s)"
}

case "${1:-up}" in
up | start | "") cmd_up ;;
stop) cmd_stop ;;
status) cmd_status ;;
-h | --help | help) sed -n '2,/^set -euo/{/^# shellcheck/d; /^set /d; s/^# \{0,1\}//; p}' "$0" ;;
*) die "usage: $0 [up|stop|status]" ;;
esac
