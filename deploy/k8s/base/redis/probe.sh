#!/bin/sh
# Kubelet probes for Redis (user "probe": PING, INFO, ROLE only).
#   probe.sh alive     the server answers (LOADING counts: a big AOF takes time)
#   probe.sh ready     dataset loaded and, on a replica, linked to its master
#   probe.sh sentinel  the Sentinel answers PING
set -u
secrets=${REDIS_SECRETS_DIR:-/etc/redis-secrets}
cli() {
  REDISCLI_AUTH="$(cat "$secrets/probe")" timeout 3 \
    redis-cli --no-auth-warning --user probe -p "${REDIS_PORT:-6379}" "$@" 2>&1
}
case "${1:-}" in
  alive)
    case "$(cli ping)" in PONG*|LOADING*) exit 0 ;; *) exit 1 ;; esac ;;
  ready)
    [ "$(cli ping | tr -d '\r')" = PONG ] || exit 1
    info="$(cli info persistence; cli info replication)"
    echo "$info" | grep -q '^loading:0' || exit 1
    if echo "$info" | grep -q '^role:slave'; then
      echo "$info" | grep -q '^master_link_status:up' || exit 1
    fi
    exit 0 ;;
  sentinel)
    [ "$(REDIS_PORT=26379 cli ping | tr -d '\r')" = PONG ] ;;
  *)
    echo "usage: probe.sh alive|ready|sentinel" >&2; exit 2 ;;
esac
