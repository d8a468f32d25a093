#!/bin/sh
# As the official image's entrypoint: options alone mean haproxy; haproxy runs in master-worker
# mode in the foreground (-W -db).
set -e
if [ "${1#-}" != "$1" ]; then
    set -- haproxy "$@"
fi
if [ "$1" = haproxy ]; then
    shift
    set -- haproxy -W -db "$@"
fi
exec "$@"
