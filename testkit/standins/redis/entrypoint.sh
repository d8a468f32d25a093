#!/bin/sh
# As the official image's entrypoint: options alone mean redis-server; the server runs as redis.
# The official image is built with protected mode off (it is reached over the container network);
# Debian's redis-server is not, so the stand-in turns it off on the command line.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = redis-server ]; then
    shift
    set -- redis-server "$@" --protected-mode no
    if [ "$(id -u)" = 0 ]; then
        chown -R redis:redis .
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
exec "$@"
