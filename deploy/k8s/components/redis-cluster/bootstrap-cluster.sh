#!/bin/sh
# Forms the Redis Cluster of the StatefulSet redis once: 3 masters with a
# replica each (redis-cli --cluster create ... --cluster-replicas 1). Run by the
# Job redis-cluster-bootstrap; idempotent: a cluster already formed (a re-run,
# a later apply) is left as it is, and a half-formed one is reported, never
# recreated (that would drop its data: repair it by hand, docs/deploy.md).
set -eu
export REDISCLI_AUTH="$(cat /etc/redis-secrets/admin)"
domain="redis-headless.${POD_NAMESPACE}.svc.cluster.local"
nodes=${REDIS_CLUSTER_NODES:-6}
cli() { redis-cli --no-auth-warning --user admin "$@"; }

addresses=""
i=0
while [ "$i" -lt "$nodes" ]; do
  host="redis-$i.$domain"
  until [ "$(cli -h "$host" ping 2>/dev/null)" = PONG ]; do
    echo "waiting for $host"
    sleep 2
  done
  # CLUSTER MEET takes addresses; the nodes then announce their DNS names.
  ip=$(getent hosts "$host" | cut -d' ' -f1)
  addresses="$addresses $ip:6379"
  i=$((i + 1))
done

state=$(cli -h "redis-0.$domain" cluster info | tr -d '\r' | sed -n 's/^cluster_state://p')
known=$(cli -h "redis-0.$domain" cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')
if [ "$state" = ok ]; then
  echo "redis cluster already formed ($known nodes)"
  exit 0
fi
if [ "$known" != 1 ]; then
  echo "redis-0 knows $known nodes but the cluster is not ok: not recreating it" >&2
  exit 1
fi
# shellcheck disable=SC2086 # one word per node address
cli --cluster create $addresses --cluster-replicas 1 --cluster-yes
until [ "$(cli -h "redis-0.$domain" cluster info | tr -d '\r' | sed -n 's/^cluster_state://p')" = ok ]; do
  sleep 1
done
echo "redis cluster formed"
