#!/usr/bin/env bash
# PostgreSQL for the tests of the service's shared store (Debian's package, never a
# download of its own).
#
#   ensure_postgres.sh            the server binaries are installed (apt-get if missing)
#   ensure_postgres.sh start      a throwaway cluster on 127.0.0.1 and a free port, with a
#                                 password-protected superuser and a database 'whyrec';
#                                 prints  url=postgresql://...  and  dir=DIR  (the URL is
#                                 also in DIR/url)
#   ensure_postgres.sh stop DIR   stop that cluster and delete DIR
#   ensure_postgres.sh halt DIR   stop that cluster's server (pg_ctl -m fast), keep DIR
#   ensure_postgres.sh resume DIR start it again on the same port (after halt)
#
# PostgreSQL refuses to run as root: as root the cluster runs as the 'postgres' OS user
# the Debian package creates; as anyone else, as that user.
set -euo pipefail

say() { echo "[ensure_postgres] $*" >&2; }

find_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

install_postgres() {
    if find_bindir >/dev/null; then return 0; fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "PostgreSQL's server binaries (initdb, pg_ctl) are missing and apt-get is not" \
            "available; install PostgreSQL with the system's package manager"
        return 1
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            say "need root (or sudo) to apt-get install postgresql"
            return 1
        fi
    fi
    say "installing Debian's postgresql package"
    local log
    log="$(mktemp)"
    if ! { $sudo apt-get update -qq && \
           DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql; } \
           >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        say "apt-get install postgresql failed"
        return 1
    fi
    rm -f "$log"
    if ! find_bindir >/dev/null; then
        say "postgresql installed but initdb/pg_ctl are still missing"
        return 1
    fi
}

# Run a command as the cluster's owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_cluster() {
    install_postgres
    local bin dir password port started=0 attempt
    bin="$(find_bindir)"
    if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
        say "running as root, and there is no 'postgres' OS user to run the server as"
        return 1
    fi
    dir="$(mktemp -d "${WHYREC_PG_TMP:-/tmp}/whyrec-pg.XXXXXX")"
    chmod 700 "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    password="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    printf '%s\n' "$password" > "$dir/pw"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/pw"
    if ! as_owner "$bin/initdb" -D "$dir/data" -U whyrec --pwfile="$dir/pw" \
            --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --no-locale \
            >"$dir/initdb.log" 2>&1; then
        tail -n 20 "$dir/initdb.log" >&2
        say "initdb failed"
        rm -rf "$dir"
        return 1
    fi
    rm -f "$dir/pw"
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
                -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir" \
                -o "-c max_connections=60 -c shared_buffers=16MB" start >/dev/null 2>&1; then
            started=1
            break
        fi
        say "start on port $port failed (attempt $attempt); trying another port"
    done
    if [ "$started" != 1 ]; then
        tail -n 20 "$dir/server.log" >&2 || true
        rm -rf "$dir"
        say "the PostgreSQL server did not start"
        return 1
    fi
    if ! PGPASSWORD="$password" "$bin/createdb" -h 127.0.0.1 -p "$port" -U whyrec whyrec \
            2>"$dir/createdb.log"; then
        cat "$dir/createdb.log" >&2
        stop_cluster "$dir"
        say "createdb failed"
        return 1
    fi
    local url="postgresql://whyrec:$password@127.0.0.1:$port/whyrec"
    ( umask 077; printf '%s\n' "$url" > "$dir/url" )
    say "PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)"
    echo "url=$url"
    echo "dir=$dir"
}

stop_cluster() {
    local dir="${1:-}" bin
    case "$(basename -- "$dir")" in
        whyrec-pg.*) ;;
        *) say "not a cluster directory this script made: '$dir'"; return 1 ;;
    esac
    if [ ! -d "$dir" ]; then return 0; fi
    if [ -f "$dir/data/postmaster.pid" ] && bin="$(find_bindir)"; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || \
            as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf -- "$dir"
}

check_dir() {
    case "$(basename -- "${1:-}")" in
        whyrec-pg.*) [ -d "$1/data" ] && return 0 ;;
    esac
    say "not a cluster directory this script made: '${1:-}'"
    return 1
}

# The chaos tests stop and start a cluster's server while clients keep using it.
halt_server() {
    local dir="${1:-}" bin
    check_dir "$dir"
    bin="$(find_bindir)"
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null
}

resume_server() {
    local dir="${1:-}" bin port
    check_dir "$dir"
    bin="$(find_bindir)"
    port="$(sed -n 's#.*@127\.0\.0\.1:\([0-9]*\)/.*#\1#p' "$dir/url")"
    if [ -z "$port" ]; then say "no port in $dir/url"; return 1; fi
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir" \
        -o "-c max_connections=60 -c shared_buffers=16MB" start >/dev/null
}

case "${1:-install}" in
    install) install_postgres && say "$("$(find_bindir)/pg_ctl" --version) ready" ;;
    start) start_cluster ;;
    stop) stop_cluster "${2:-}" ;;
    halt) halt_server "${2:-}" ;;
    resume) resume_server "${2:-}" ;;
    *) say "usage: $0 [install | start | stop DIR | halt DIR | resume DIR]"; exit 2 ;;
esac
