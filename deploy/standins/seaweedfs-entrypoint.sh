#!/bin/sh
# The part of the upstream seaweedfs image's entrypoint that docker-compose.yml relies on.
set -eu
if [ "$(id -u)" = 0 ]; then
    chown -R seaweed:seaweed /data
    exec setpriv --reuid=seaweed --regid=seaweed --init-groups "$0" "$@"
fi
case "${1:-}" in
    server)
        shift
        exec /usr/bin/weed -logtostderr=true server -dir=/data -volume.max=0 -master.volumeSizeLimitMB=1024 "$@" ;;
    *)
        exec /usr/bin/weed "$@" ;;
esac
