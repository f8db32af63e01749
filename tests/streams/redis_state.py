"""What the stream workers left in Redis, comparable across runs (tests only)."""

from __future__ import annotations

from typing import Any

import orjson

from schemas import redis_keys as rk
from schemas.bar_series import BarSeries

VOLATILE_QUOTE_FIELDS = ("process_ts",)


async def canonical_state(client: Any) -> dict[str, Any]:
    """Every ``hq:*`` key's content minus what legitimately differs between runs.

    Drops ``process_ts`` from quotes and ticks, ``ts`` from market summaries,
    the stats partials, the state markers' times, the alert stream's ids and
    order (alerts are compared as a sorted list), and the order of the fields
    of candles' JSON; compares each bar series as its stored forms join
    (a worker's whole form and open part, or a rebuild's whole form). Two
    runs over the same raw records, whatever their worker count or crashes,
    must give equal results, and a cluster's state equals one server's. Reads
    everything, so never call it on a production Redis.
    """

    def strip(data: bytes) -> dict[str, Any]:
        obj: dict[str, Any] = orjson.loads(data)
        for name in VOLATILE_QUOTE_FIELDS:
            obj.pop(name, None)
        return obj

    state: dict[str, Any] = {}
    keys = sorted([k.decode() async for k in client.scan_iter(match="hq:*", count=1000)])
    for key in keys:
        kind = (await client.type(key)).decode()
        if key == rk.ALERTS_SEEN_CLUSTER:  # the same set as on one server, in ALERTS's slot
            state[rk.ALERTS_SEEN] = sorted(m.decode() for m in await client.smembers(key))
            continue
        if key in (rk.STATS_PARTIALS, rk.STATE_REBUILDING):
            continue
        if key == rk.STATE_READY:  # which parts are marked, not when
            state[key] = sorted(k.decode() for k in await client.hkeys(key))
            continue
        if key == rk.ALERTS:
            entries = await client.xrange(key)
            state[key] = sorted(orjson.dumps(orjson.loads(f[b"data"])).decode()
                                for _, f in entries)  # fmt: skip
        elif key.startswith("hq:quote:"):
            h = await client.hgetall(key)
            state[key] = {"ts": int(h[b"ts"]), "data": strip(h[b"data"])}
        elif key.startswith("hq:ticks:"):
            entries = await client.xrange(key)
            state[key] = [(i.decode(), strip(f[b"data"])) for i, f in entries]
        elif key.startswith("hq:market:"):
            record = orjson.loads((await client.hget(key, "data")) or b"{}")
            record.pop("ts", None)
            state[key] = record
        elif key.startswith("hq:candles:"):  # JSON objects: their fields, not their order
            found = await client.hgetall(key)
            state[key] = {k.decode(): orjson.loads(v) for k, v in found.items()}
        elif key.startswith("hq:bars:"):  # each series joined: whole forms and open parts
            found = {k.decode(): v for k, v in (await client.hgetall(key)).items()}
            state[key] = {
                tf: BarSeries.from_stored(v, found.get(rk.bars_open_field(tf))).to_json()
                for tf, v in found.items()
                if ":" not in tf
            }
        elif kind == "hash":
            state[key] = {k.decode(): v.decode() for k, v in (await client.hgetall(key)).items()}
        elif kind == "zset":
            members = await client.zrange(key, 0, -1, withscores=True)
            state[key] = [(m.decode(), s) for m, s in members]
        elif kind == "set":
            state[key] = sorted(m.decode() for m in await client.smembers(key))
        else:
            state[key] = kind
    return state
