#!/bin/sh
# The part of the upstream redis image's entrypoint that docker-compose.yml relies on.
set -eu
if [ "${1:-}" = redis-server ]; then
    case "${2:-}" in
        *.conf) ;;
        *) set -- "$@" --protected-mode no ;;
    esac
    if [ "$(id -u)" = 0 ]; then
        chown -R redis:redis /data
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
exec "$@"
