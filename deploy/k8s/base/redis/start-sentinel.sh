#!/bin/sh
# Starts a Sentinel monitoring the master "hq" (quorum 2 of 3). Sentinel
# rewrites its config on failover: it lives on the pod's memory volume.
set -eu
secrets=${REDIS_SECRETS_DIR:-/etc/redis-secrets}
conf=${SENTINEL_RUN_DIR:-/run/sentinel}/sentinel.conf
umask 077
domain="redis-headless.${POD_NAMESPACE}.svc.cluster.local"
self="$(hostname).$domain"
pw() { cat "$secrets/$1"; }
sha() { printf %s "$(pw "$1")" | sha256sum | cut -d' ' -f1; }

master=""
for i in 0 1 2; do
  peer="redis-$i.$domain"
  [ "$peer" = "$self" ] && continue
  master=$(REDISCLI_AUTH="$(pw sentinel)" timeout 3 redis-cli --no-auth-warning \
    -h "$peer" -p 26379 --user sentinel sentinel get-master-addr-by-name hq 2>/dev/null \
    | head -n 1) || master=""
  [ -n "$master" ] && break
done
[ -n "$master" ] || master="redis-0.$domain"

cat > "$conf" <<EOF
port 26379
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $self
user default off
user sentinel on #$(sha sentinel) allchannels +@all
user probe on #$(sha probe) +ping +info
sentinel sentinel-user sentinel
sentinel sentinel-pass $(pw sentinel)
sentinel monitor hq $master 6379 2
sentinel auth-user hq sentinel
sentinel auth-pass hq $(pw sentinel)
sentinel down-after-milliseconds hq 5000
sentinel failover-timeout hq 60000
sentinel parallel-syncs hq 1
EOF
exec redis-sentinel "$conf"
