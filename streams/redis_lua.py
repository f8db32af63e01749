"""The Lua scripts of the Redis sink and the compact arguments they take.

One script call writes a whole chunk of a batch, so redis-py packs a handful
of arguments per quote instead of ~25, and Redis runs one script instead of
one per quote:

* :data:`QUOTES_LUA` takes the chunk's quotes grouped by code. KEYS are each
  code's quote HASH and ticks STREAM, then (standalone only) the rank ZSETs
  and code SETs (:func:`rank_and_code_keys`). ARGV[1] is a JSON header, one
  array per code ``[best, partition, code, name, market, price, change,
  change_pct, amount, volume, ts_1 .. ts_n]`` (all strings, numbers formatted
  with ``repr`` as redis-py would); ARGV[5 + k] is the JSON ``data`` of the
  chunk's k-th tick. Per code it reads the stored ``ts`` once, appends every
  tick newer than the running ``ts`` to the ticks stream (id
  ``<exchange_ts>-0``; such a tick is "won", one with the running ``ts``
  "same", an older one "stale" — exactly the answers of one newer-wins write
  per quote in batch order), writes the HASH once with the newest tick
  (``best``) when it is newer than the stored one, and ranks the stock when
  the newest tick is not older than the stored one: with the rank keys, one
  ZADD per rank key and one SADD per code set for the whole chunk, returning
  ``{won, same, stale}``; without them, it returns ``{won, same, stale,
  i_1 .. i_k}``, the header rows to rank, and the caller ranks them.
* :data:`CANDLES_LUA`: every candle of the chunk; an open candle never
  overwrites a closed one of the same minute.
* :data:`ALERTS_LUA`: every alert of the batch, appended once per alert id.

Numbers reach Redis as the strings Python made (Redis 7.0 would format Lua
numbers with ``%.17g``).

Redis Cluster: a script may touch keys of one hash slot only. Per-stock keys
carry the code as a hash tag (``{600000}``), so :func:`quote_slot_calls` and
:func:`candle_slot_calls` make one call per slot (in practice one per stock:
5,000 codes over 16,384 slots), without the rank keys; the sink then ranks
with single-key ZADD/SADD (:func:`ranking_updates`). The alert stream and its
id set share a slot through :func:`schemas.redis_keys.alerts_seen`. This
module builds arguments only; it never talks to Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import orjson
from redis.crc import key_slot

from schemas import redis_keys as rk
from schemas.exchange import MARKETS, MARKETS_AND_ALL

QUOTES_LUA: Final = r"""
local hdr = cjson.decode(ARGV[1])
local maxlen, qttl, tttl, rttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ncodes = #hdr
local rbase = 2 * ncodes
local market_index = {SH = 0, SZ = 1, BJ = 2}
local rank_here = #KEYS > rbase
local zargs, sargs, to_rank = {}, {}, {}
local won, same, stale = 0, 0, 0
local a = 6
for i = 1, ncodes do
  local h = hdr[i]
  local qkey, tkey = KEYS[2 * i - 1], KEYS[2 * i]
  local stored = tonumber(redis.call('HGET', qkey, 'ts') or '-1')
  local cur = stored
  local added = false
  local n = #h - 10
  for j = 1, n do
    local ts_s = h[10 + j]
    local ts = tonumber(ts_s)
    if ts > cur then
      redis.pcall('XADD', tkey, 'MAXLEN', '~', maxlen, ts_s .. '-0', 'data', ARGV[a + j - 1])
      cur = ts
      won = won + 1
      added = true
    elseif ts == cur then
      same = same + 1
    else
      stale = stale + 1
    end
  end
  if added then redis.call('EXPIRE', tkey, tttl) end
  local best = tonumber(h[1])
  local best_ts = tonumber(h[11 + best])
  if best_ts > stored then
    redis.call('HSET', qkey, 'ts', h[11 + best], 'data', ARGV[a + best],
      'code', h[3], 'name', h[4], 'market', h[5], 'price', h[6], 'change', h[7],
      'change_pct', h[8], 'amount', h[9], 'volume', h[10], 'partition', h[2])
    redis.call('EXPIRE', qkey, qttl)
  end
  if best_ts >= stored and not rank_here then
    to_rank[#to_rank + 1] = i
  elseif best_ts >= stored then
    local m = market_index[h[5]]
    for k = 1, 3 do
      local t = zargs[m * 3 + k]
      if not t then t = {}; zargs[m * 3 + k] = t end
      t[#t + 1] = h[7 + k]
      t[#t + 1] = h[3]
      t = zargs[9 + k]
      if not t then t = {}; zargs[9 + k] = t end
      t[#t + 1] = h[7 + k]
      t[#t + 1] = h[3]
    end
    local s = sargs[13 + m]
    if not s then s = {}; sargs[13 + m] = s end
    s[#s + 1] = h[3]
  end
  a = a + n
end
if not rank_here then
  local out = {won, same, stale}
  for k = 1, #to_rank do out[3 + k] = to_rank[k] end
  return out
end
for idx, t in pairs(zargs) do
  for i = 1, #t, 1000 do
    redis.call('ZADD', KEYS[rbase + idx], unpack(t, i, math.min(i + 999, #t)))
  end
  redis.call('EXPIRE', KEYS[rbase + idx], rttl)
end
for idx, s in pairs(sargs) do
  for i = 1, #s, 1000 do
    redis.call('SADD', KEYS[rbase + idx], unpack(s, i, math.min(i + 999, #s)))
  end
  redis.call('EXPIRE', KEYS[rbase + idx], rttl)
end
return {won, same, stale}
"""

CANDLES_LUA: Final = r"""
local hdr = cjson.decode(ARGV[1])
local n = 0
for i = 1, #hdr do
  local key, minute, closed, ttl = KEYS[i], hdr[i][1], hdr[i][2], hdr[i][3]
  local write = true
  if closed == '0' then
    local cur = redis.call('HGET', key, minute)
    if cur and string.find(cur, '"closed":true', 1, true) then write = false end
  end
  if write then
    redis.call('HSET', key, minute, ARGV[1 + i])
    redis.call('EXPIRE', key, ttl)
    n = n + 1
  end
end
return n
"""

ALERTS_LUA: Final = r"""
local n = 0
for i = 3, #ARGV, 2 do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[i + 1])
    n = n + 1
  end
end
if n > 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return n
"""

SCRIPTS: Final = {"quotes": QUOTES_LUA, "candles": CANDLES_LUA, "alerts": ALERTS_LUA}

_MARKETS: Final = ("SH", "SZ", "BJ")


def rank_and_code_keys() -> list[str]:
    """The 12 rank ZSETs (SH, SZ, BJ, ALL x metrics) then the 3 code SETs."""
    keys = [rk.rank(m, metric) for m in MARKETS_AND_ALL for metric in rk.RANK_METRICS]
    return keys + [rk.codes(m) for m in MARKETS]


_RANK_AND_CODE_KEYS: Final = tuple(rank_and_code_keys())


QuoteRow = list[str]  # one code's header row (see QUOTES_LUA)
ScriptCall = tuple[list[str], list[Any]]  # (KEYS, ARGV)


def _code_rows(
    quotes: list[tuple[dict[str, Any], int]], data: list[bytes]
) -> Iterator[tuple[str, QuoteRow, list[bytes]]]:
    """Per code (first-seen order): the code, its header row and its ticks' JSON."""
    groups: dict[str, list[int]] = {}
    for i, (q, _) in enumerate(quotes):
        idx = groups.get(q["code"])
        if idx is None:
            groups[q["code"]] = [i]
        else:
            idx.append(i)
    for code, idx in groups.items():
        best = 0
        best_ts = -1
        tss: list[str] = []
        for j, i in enumerate(idx):
            ts = quotes[i][0]["exchange_ts"]
            if ts >= best_ts:
                best, best_ts = j, ts
            tss.append(str(ts))
        q, partition = quotes[idx[best]]
        row = [
            str(best), str(partition), code, q["name"], q["market"], repr(q["price"]),
            repr(q["change"]), repr(q["change_pct"]), repr(q["amount"]), repr(q["volume"]),
            *tss,
        ]  # fmt: skip
        yield code, row, [data[i] for i in idx]


def quote_chunks(
    quotes: list[tuple[dict[str, Any], int]], data: list[bytes], max_ticks: int
) -> list[ScriptCall]:
    """(KEYS, ARGV) of each standalone QUOTES_LUA call for ``quotes`` (ranking included).

    ``data`` holds each quote's JSON (same order). A code's ticks never span
    two chunks; a chunk holds about ``max_ticks`` ticks.
    """
    calls: list[ScriptCall] = []
    keys: list[str] = []
    header: list[QuoteRow] = []
    blobs: list[bytes] = []
    for code, row, ticks in _code_rows(quotes, data):
        header.append(row)
        blobs += ticks
        keys += (rk.quote(code), rk.ticks(code))
        if len(blobs) >= max_ticks:
            calls.append(_quote_call(keys, header, blobs, _RANK_AND_CODE_KEYS))
            keys, header, blobs = [], [], []
    if header:
        calls.append(_quote_call(keys, header, blobs, _RANK_AND_CODE_KEYS))
    return calls


def quote_slot_calls(
    quotes: list[tuple[dict[str, Any], int]], data: list[bytes]
) -> list[tuple[ScriptCall, list[QuoteRow]]]:
    """Redis Cluster: one QUOTES_LUA call per hash slot (no rank keys), with its header.

    The call returns the indices (1-based) of the header rows to rank: see
    :func:`ranking_updates`.
    """
    by_slot: dict[int, tuple[list[str], list[QuoteRow], list[bytes]]] = {}
    for code, row, ticks in _code_rows(quotes, data):
        slot = code_slot(code)
        group = by_slot.get(slot)
        if group is None:
            group = by_slot[slot] = ([], [], [])
        keys, header, blobs = group
        keys += (rk.quote(code), rk.ticks(code))
        header.append(row)
        blobs += ticks
    return [
        (_quote_call(keys, header, blobs, ()), header) for keys, header, blobs in by_slot.values()
    ]


def ranking_updates(
    rows: list[QuoteRow],
) -> tuple[dict[str, dict[str, float]], dict[str, list[str]]]:
    """The ZADD mapping of each rank ZSET and the SADD members of each code SET for ``rows``.

    The same rankings QUOTES_LUA makes inside the script on a standalone Redis.
    """
    zadds: dict[str, dict[str, float]] = {}
    sadds: dict[str, list[str]] = {}
    for row in rows:
        code, market = row[2], row[4]
        for metric, score in zip(rk.RANK_METRICS, row[7:10], strict=True):
            for where in (market, "ALL"):
                zadds.setdefault(rk.rank(where, metric), {})[code] = float(score)  # type: ignore[arg-type]
        sadds.setdefault(rk.codes(market), []).append(code)  # type: ignore[arg-type]
    return zadds, sadds


def code_slot(code: str) -> int:
    """The Redis Cluster hash slot of every per-stock key of ``code`` (its hash tag)."""
    return key_slot(code.encode())


def _quote_call(
    keys: list[str], header: list[QuoteRow], blobs: list[bytes], rank_keys: tuple[str, ...]
) -> ScriptCall:
    argv: list[Any] = [
        orjson.dumps(header), rk.TICKS_MAXLEN, rk.QUOTE_TTL_S, rk.TICKS_TTL_S, rk.MARKET_TTL_S,
        *blobs,
    ]  # fmt: skip
    return [*keys, *rank_keys], argv


def candle_call(candles: list[dict[str, Any]]) -> ScriptCall:
    """(KEYS, ARGV) of the CANDLES_LUA call for ``candles``."""
    keys = [rk.candles(c["code"], c["trade_date"], c.get("tf", "1m")) for c in candles]
    header = [
        [str(c["minute_ts"]), "1" if c["closed"] else "0", str(rk.candles_ttl_s(c.get("tf", "1m")))]
        for c in candles
    ]
    return keys, [orjson.dumps(header), *map(orjson.dumps, candles)]


def candle_slot_calls(candles: list[dict[str, Any]]) -> list[ScriptCall]:
    """Redis Cluster: one CANDLES_LUA call per hash slot."""
    by_slot: dict[int, list[dict[str, Any]]] = {}
    for candle in candles:
        by_slot.setdefault(code_slot(candle["code"]), []).append(candle)
    return [candle_call(group) for group in by_slot.values()]


def alert_id(alert: dict[str, Any]) -> str:
    return f"{alert['code']}|{alert['kind']}|{alert['exchange_ts']}"


def alert_call(alerts: list[dict[str, Any]], *, cluster: bool = False) -> ScriptCall:
    """(KEYS, ARGV) of the ALERTS_LUA call for ``alerts``."""
    argv: list[Any] = [rk.ALERTS_MAXLEN, rk.MARKET_TTL_S]
    for alert in alerts:
        argv += (alert_id(alert), orjson.dumps(alert))
    return [rk.ALERTS, rk.alerts_seen(cluster=cluster)], argv
