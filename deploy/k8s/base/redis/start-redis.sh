#!/bin/sh
# Starts redis-server with the hqstream ACL users (passwords from the Secret
# hqstream-redis, mounted at /etc/redis-secrets) and, with REDIS_HA=yes, as the
# master or a replica of the master the Sentinels report; with
# REDIS_CLUSTER=yes as a Redis Cluster node announcing its pod DNS name
# (components/redis-cluster; its bootstrap Job assigns the slots). Extra
# arguments go to redis-server (persistence, memory). Writes its config to
# /run/redis (memory).
set -eu
secrets=${REDIS_SECRETS_DIR:-/etc/redis-secrets}
conf=${REDIS_RUN_DIR:-/run/redis}/redis.conf
umask 077

sha() { printf %s "$(cat "$secrets/$1")" | sha256sum | cut -d' ' -f1; }

# A cluster client learns the slot map first (CLUSTER SLOTS/SHARDS): the
# read-only gateway needs those too.
cluster_reads=""
[ "${REDIS_CLUSTER:-no}" = yes ] && cluster_reads="+cluster|slots +cluster|shards +cluster|nodes"

# default is off: every client authenticates as its own user (docs/deploy.md).
cat > "$conf" <<EOF
port 6379
dir ${REDIS_DATA_DIR:-/data}
user default off
user admin on #$(sha admin) ~* &* +@all
user replication on #$(sha replication) +psync +replconf +ping
user sentinel on #$(sha sentinel) allchannels +multi +slaveof +ping +exec +subscribe +config|rewrite +role +publish +info +client|setname +client|kill +script|kill
user probe on #$(sha probe) +ping +info +role
user metrics on #$(sha metrics) -@all +@connection +info +role +config|get +client|list +slowlog|get +slowlog|len +latency|latest +dbsize +memory|stats
user streams on #$(sha streams) ~hq:* resetchannels +@all -@admin -@dangerous +info +scan
user gateway on #$(sha gateway) ~hq:* resetchannels -@all +@read +@connection -@dangerous $cluster_reads
EOF

if [ "${REDIS_CLUSTER:-no}" = yes ]; then
  self="$(hostname).redis-headless.${POD_NAMESPACE}.svc.cluster.local"
  # nodes.conf on the data volume: a restarted pod keeps its node id and slots.
  cat >> "$conf" <<EOF
cluster-enabled yes
cluster-config-file ${REDIS_DATA_DIR:-/data}/nodes.conf
cluster-announce-hostname $self
cluster-preferred-endpoint-type hostname
masteruser replication
masterauth $(cat "$secrets/replication")
EOF
fi

if [ "${REDIS_HA:-no}" = yes ]; then
  domain="redis-headless.${POD_NAMESPACE}.svc.cluster.local"
  self="$(hostname).$domain"
  master=""
  for i in 0 1 2; do
    peer="redis-$i.$domain"
    [ "$peer" = "$self" ] && continue
    master=$(REDISCLI_AUTH="$(cat "$secrets/sentinel")" timeout 3 redis-cli --no-auth-warning \
      -h "$peer" -p 26379 --user sentinel sentinel get-master-addr-by-name hq 2>/dev/null \
      | head -n 1) || master=""
    [ -n "$master" ] && break
  done
  # No Sentinel knows a master yet: a fresh install, redis-0 starts as master.
  [ -n "$master" ] || master="redis-0.$domain"
  cat >> "$conf" <<EOF
replica-announce-ip $self
masteruser replication
masterauth $(cat "$secrets/replication")
EOF
  if [ "$master" != "$self" ]; then
    echo "replicaof $master 6379" >> "$conf"
  fi
fi

exec redis-server "$conf" "$@"
