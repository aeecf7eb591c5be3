#!/bin/sh
# Starts the old-design baseline daemon (availd-old.pl) in the foreground for
# the benchmark runner:
#
#   run-old.sh REGISTRY_PORT [LISTEN_PORT] [more availd-old.pl options...]
#
# REGISTRY_PORT: the port of a fake registry on 127.0.0.1 (availd-test-registry)
# LISTEN_PORT:   where the daemon listens on 127.0.0.1 (default 4343)
#
# The script execs Perl, so its pid is the Net::Server parent's (SIGTERM stops
# the daemon and its children; their RSS is that pid's plus its children's).
# The cache starts empty every time, in $AVAILD_OLD_CACHE_DIR (default
# ${TMPDIR:-/tmp}/availd-old-LISTEN_PORT, reused by the next run on that port).
# Logs go to stderr at level 1 (warnings) unless --log-level is given.
set -eu

usage() {
    echo "usage: $0 REGISTRY_PORT [LISTEN_PORT] [availd-old.pl options...]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
registry_port=$1
shift
listen_port=4343
if [ $# -ge 1 ]; then
    case $1 in
        -*) ;;
        *) listen_port=$1; shift ;;
    esac
fi
case $registry_port$listen_port in
    *[!0-9]*) usage ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
cache_dir=${AVAILD_OLD_CACHE_DIR:-${TMPDIR:-/tmp}/availd-old-$listen_port}
mkdir -p "$cache_dir"

exec /usr/bin/perl "$here/availd-old.pl" \
    --registry-host 127.0.0.1 --registry-port "$registry_port" \
    --port "$listen_port" \
    --cache-file "$cache_dir/cache.db" --clear-cache \
    --log stderr --log-level 1 \
    "$@"
