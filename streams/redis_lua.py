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
  ZADD per rank key for the whole chunk (its market's three: the ALL ranking
  is merged from the markets' when read, ``api.store.Store.rank``, so a tick
  costs three ZSET updates, not six: ~12 µs of Redis's ~50), and the code
  into its market's code SET with the first write of each exchange minute
  of the code (as the TTLs below), returning
  ``{won, same, stale}``; without them, it returns ``{won, same, stale,
  i_1 .. i_k}``, the header rows to rank (negative: its code into the code
  SET too), and the caller ranks them. The
  HASH's and the STREAM's TTLs are set by the first write of each exchange
  minute of the code (the minute of the stored ``ts`` against the one
  written), not by every tick: with the candle script's, three EXPIREs a
  tick cost 7-9 % of Redis's CPU per tick (docs/benchmarks.md, "TTLs
  refreshed once a minute"). A stock's keys so expire at most a minute
  sooner after its last tick (TTLs are days).
* :data:`CANDLES_LUA`: every candle of the chunk; an open candle never
  overwrites a closed one of the same minute. A candle HASH gets its TTL
  when a write adds a field (a bar's first write), not at every tick.
* :data:`ALERTS_LUA`: every alert of the batch, appended once per alert id.
* :data:`BARS_LUA`: every changed stock's bar series (``hq:bars:{code}``, a
  field per timeframe), with its TTL. ARGV[1] is a JSON list aligned with
  KEYS, each key's number of fields; ARGV[2] the TTL; then each key's
  fields and values. At a minute's close every stock's series change: one
  call instead of an HSET and an EXPIRE per stock (10,000 commands a
  minute through redis-py's pipeline).
* :data:`HISTORY_LUA` (the rebuild): older ticks of each code, ascending and
  without duplicates, appended to its ticks STREAM; when the stream already
  holds a tick at or after the first of them (a live batch came first), the
  stream is rewritten as the union in exchange-time order, so a rebuild never
  loses a newer tick nor leaves a gap before it. Touches no quote HASH.

Numbers reach Redis as the strings Python made (Redis 7.0 would format Lua
numbers with ``%.17g``).

Redis Cluster: a script's declared keys must hash to one slot, and one call
per slot would be one call per stock (5,000 codes over 16,384 slots): ~100 µs
of client CPU each. :data:`CLUSTER_SCRIPTS` are the same scripts with the
Redis 7 flag ``allow-cross-slot-keys``: a call may touch keys of every slot
its master serves, declares its first key only and takes the key list as its
last ARGV. :func:`quote_node_chunks` and :func:`candle_node_calls` group the
batch per master (chunked as on one server), without the rank keys; the sink
then ranks the stocks they name with one :data:`RANKS_LUA` call per master
(:func:`rank_node_calls`). A slot that moved
meanwhile makes the script fail on a "non local key" (the sink retries the
batch: every write is newer-wins). The alert stream and its id set share a
slot through :func:`schemas.redis_keys.alerts_seen`. This module builds
arguments only; it never talks to Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import orjson
from redis.crc import key_slot

from schemas import redis_keys as rk
from schemas.bar_series import Bar
from schemas.exchange import MARKETS
from schemas.native import native_module
from schemas.records import Quote
from streams.alerts import Alert
from streams.candles import CANDLE_JSON, Candle

QUOTES_LUA: Final = r"""
local hdr = cjson.decode(ARGV[1])
local maxlen, qttl, tttl, rttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local MINUTE_MS = 60000
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
  local stored_minute = math.floor(stored / MINUTE_MS)
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
  if added and math.floor(cur / MINUTE_MS) ~= stored_minute then
    redis.call('EXPIRE', tkey, tttl)
  end
  local best = tonumber(h[1])
  local best_ts = tonumber(h[11 + best])
  local new_minute = math.floor(best_ts / MINUTE_MS) ~= stored_minute
  if best_ts > stored then
    redis.call('HSET', qkey, 'ts', h[11 + best], 'data', ARGV[a + best],
      'code', h[3], 'name', h[4], 'market', h[5], 'price', h[6], 'change', h[7],
      'change_pct', h[8], 'amount', h[9], 'volume', h[10], 'partition', h[2])
    if new_minute then
      redis.call('EXPIRE', qkey, qttl)
    end
  end
  if best_ts >= stored and not rank_here then
    to_rank[#to_rank + 1] = new_minute and -i or i
  elseif best_ts >= stored then
    local m = market_index[h[5]]
    for k = 1, 3 do
      local t = zargs[m * 3 + k]
      if not t then t = {}; zargs[m * 3 + k] = t end
      t[#t + 1] = h[7 + k]
      t[#t + 1] = h[3]
    end
    if new_minute then
      local s = sargs[10 + m]
      if not s then s = {}; sargs[10 + m] = s end
      s[#s + 1] = h[3]
    end
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
    if redis.call('HSET', key, minute, ARGV[1 + i]) == 1 then
      redis.call('EXPIRE', key, ttl)
    end
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

HISTORY_LUA: Final = r"""
local hdr = cjson.decode(ARGV[1])
local maxlen, ttl = ARGV[2], ARGV[3]
local added = 0
local a = 4
local function ms(id) return tonumber(string.match(id, '^(%d+)')) end
for i = 1, #hdr do
  local key, tss = KEYS[i], hdr[i]
  local n = #tss
  local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  local last = -1
  if #top > 0 then last = ms(top[1][1]) end
  if last >= tonumber(tss[1]) then
    -- newer ticks were written first (by a live batch): merge, in exchange-time order
    local merged, order = {}, {}
    for _, e in ipairs(redis.call('XRANGE', key, '-', '+')) do
      local f = e[2]
      for k = 1, #f, 2 do
        if f[k] == 'data' then merged[ms(e[1])] = f[k + 1] end
      end
    end
    for j = 1, n do
      local ts = tonumber(tss[j])
      if not merged[ts] then merged[ts] = ARGV[a + j - 1]; added = added + 1 end
    end
    for ts in pairs(merged) do order[#order + 1] = ts end
    table.sort(order)
    redis.call('DEL', key)
    for _, ts in ipairs(order) do
      redis.call('XADD', key, string.format('%d-0', ts), 'data', merged[ts])
    end
    redis.call('XTRIM', key, 'MAXLEN', '~', maxlen)
  else
    for j = 1, n do
      redis.call('XADD', key, 'MAXLEN', '~', maxlen, tss[j] .. '-0', 'data', ARGV[a + j - 1])
    end
    added = added + n
  end
  redis.call('EXPIRE', key, ttl)
  a = a + n
end
return added
"""

BARS_LUA: Final = r"""
local counts = cjson.decode(ARGV[1])
local a = 3
for i = 1, #KEYS do
  local last = a + 2 * counts[i] - 1
  redis.call('HSET', KEYS[i], unpack(ARGV, a, last))
  redis.call('EXPIRE', KEYS[i], ARGV[2])
  a = last + 1
end
return #KEYS
"""

SCRIPTS: Final = {
    "quotes": QUOTES_LUA,
    "candles": CANDLES_LUA,
    "alerts": ALERTS_LUA,
    "history": HISTORY_LUA,
    "bars": BARS_LUA,
}

#: Redis Cluster: the rankings of a batch on one master. ARGV[1] is a JSON list
#: aligned with KEYS, ``["z", score, code, ...]`` (a rank ZSET) or ``["s", code,
#: ...]`` (a code SET); ARGV[2] the TTL.
RANKS_LUA: Final = r"""
local updates = cjson.decode(ARGV[1])
for i = 1, #KEYS do
  local u = updates[i]
  local command = u[1] == 'z' and 'ZADD' or 'SADD'
  for j = 2, #u, 1000 do
    redis.call(command, KEYS[i], unpack(u, j, math.min(j + 999, #u)))
  end
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return #KEYS
"""

#: Redis Cluster (Redis 7+): the script may touch keys of several slots of the
#: master it runs on; it declares its first key only (for routing) and reads
#: them all from its last ARGV (:func:`cross_slot_call`).
CROSS_SLOT_PROLOGUE: Final = (
    "#!lua flags=allow-cross-slot-keys\nlocal KEYS = cjson.decode(ARGV[#ARGV])\n"
)
CLUSTER_SCRIPTS: Final = {
    "quotes": CROSS_SLOT_PROLOGUE + QUOTES_LUA,
    "candles": CROSS_SLOT_PROLOGUE + CANDLES_LUA,
    "alerts": ALERTS_LUA,  # its two keys share a slot (schemas.redis_keys.alerts_seen)
    "ranks": CROSS_SLOT_PROLOGUE + RANKS_LUA,
    "history": HISTORY_LUA,  # called per code on a cluster (RedisSink.write_history)
    "bars": CROSS_SLOT_PROLOGUE + BARS_LUA,
}


def rank_and_code_keys() -> list[str]:
    """The 9 rank ZSETs (SH, SZ, BJ x metrics) then the 3 code SETs."""
    keys = [rk.rank(m, metric) for m in MARKETS for metric in rk.RANK_METRICS]
    return keys + [rk.codes(m) for m in MARKETS]


_RANK_AND_CODE_KEYS: Final = tuple(rank_and_code_keys())


QuoteRow = list[str]  # one code's header row (see QUOTES_LUA)
ScriptCall = tuple[list[str], list[Any]]  # (KEYS, ARGV)


def _code_rows(
    quotes: list[tuple[Quote, int]], data: list[bytes]
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
    quotes: list[tuple[Quote, int]], data: list[bytes], max_ticks: int
) -> list[ScriptCall]:
    """(KEYS, ARGV) of each standalone QUOTES_LUA call for ``quotes`` (ranking included).

    ``data`` holds each quote's JSON (same order). A code's ticks never span
    two chunks; a chunk holds about ``max_ticks`` ticks.
    """
    return [
        _quote_call(keys, orjson.dumps(header), blobs, _RANK_AND_CODE_KEYS)
        for keys, header, blobs in _chunks(_code_rows(quotes, data), max_ticks)
    ]


def _around_code(key: Callable[[str], str]) -> tuple[str, str]:
    """What a per-code key holds before and after the code."""
    before, _, after = key("\0").partition("\0")
    return before, after


QuoteChunks = Callable[[list[tuple[Quote, int]], list[bytes], int], list[ScriptCall]]


def quote_chunks_path(enabled: bool = True) -> QuoteChunks:
    """:func:`quote_chunks`, compiled when ``hqstream_native`` is installed (of this code's
    version) and ``enabled`` (``HQ_STREAMS_NATIVE``): the same calls, byte for byte.

    The compiled rows cost ~2 µs of a worker's CPU per tick against ~5 in Python
    (docs/benchmarks.md, "The quote script's arguments compiled"); the Python ones stay
    the reference.
    """
    native = native_module()[0] if enabled else None
    if native is None:
        return quote_chunks
    compiled = native.quote_chunks
    quote_key, ticks_key = _around_code(rk.quote), _around_code(rk.ticks)

    def chunks(
        quotes: list[tuple[Quote, int]], data: list[bytes], max_ticks: int
    ) -> list[ScriptCall]:
        return [
            _quote_call(keys, header, blobs, _RANK_AND_CODE_KEYS)
            for keys, header, blobs in compiled(quotes, data, max_ticks, quote_key, ticks_key)
        ]

    return chunks


def quote_node_chunks(
    quotes: list[tuple[Quote, int]],
    data: list[bytes],
    max_ticks: int,
    node_of: Callable[[int], str],
) -> list[tuple[ScriptCall, list[QuoteRow]]]:
    """Redis Cluster: the CLUSTER_SCRIPTS quotes calls, chunked per master, with their header.

    ``node_of`` names the master of a hash slot. Each call's keys are of one
    master (:func:`cross_slot_call`); it ranks nothing and returns the indices
    (1-based; negative when the code goes into its code SET too) of the header
    rows to rank: see :func:`rank_node_calls`.
    """
    by_node: dict[str, list[tuple[str, QuoteRow, list[bytes]]]] = {}
    for code, row, ticks in _code_rows(quotes, data):
        by_node.setdefault(node_of(code_slot(code)), []).append((code, row, ticks))
    return [
        (cross_slot_call(_quote_call(keys, orjson.dumps(header), blobs, ())), header)
        for rows in by_node.values()
        for keys, header, blobs in _chunks(iter(rows), max_ticks)
    ]


def _chunks(
    rows: Iterator[tuple[str, QuoteRow, list[bytes]]], max_ticks: int
) -> Iterator[tuple[list[str], list[QuoteRow], list[bytes]]]:
    """Per chunk of about ``max_ticks`` ticks (a code never split): keys, header, ticks."""
    keys: list[str] = []
    header: list[QuoteRow] = []
    blobs: list[bytes] = []
    for code, row, ticks in rows:
        header.append(row)
        blobs += ticks
        keys += (rk.quote(code), rk.ticks(code))
        if len(blobs) >= max_ticks:
            yield keys, header, blobs
            keys, header, blobs = [], [], []
    if header:
        yield keys, header, blobs


def cross_slot_call(call: ScriptCall) -> ScriptCall:
    """A CLUSTER_SCRIPTS call of ``call``: the first key declared, every key in the last ARGV."""
    keys, argv = call
    return keys[:1], [*argv, orjson.dumps(keys)]


def rank_node_calls(
    rows: list[tuple[QuoteRow, bool]], node_of: Callable[[int], str]
) -> list[ScriptCall]:
    """Redis Cluster: the RANKS_LUA calls (one per master) ranking the stocks of ``rows``
    (each with whether its code goes into the code SET: the code's first write of
    an exchange minute), as QUOTES_LUA ranks them inside the script on one server."""
    updates: dict[str, list[str]] = {}
    for row, new_minute in rows:
        code, market = row[2], row[4]
        for metric, score in zip(rk.RANK_METRICS, row[7:10], strict=True):
            key = rk.rank(market, metric)  # type: ignore[arg-type]
            updates.setdefault(key, ["z"]).extend((score, code))
        if new_minute:
            updates.setdefault(rk.codes(market), ["s"]).append(code)  # type: ignore[arg-type]
    by_node: dict[str, list[str]] = {}
    for key in updates:
        by_node.setdefault(node_of(key_slot(key.encode())), []).append(key)
    return [
        cross_slot_call((keys, [orjson.dumps([updates[k] for k in keys]), rk.MARKET_TTL_S]))
        for keys in by_node.values()
    ]


def code_slot(code: str) -> int:
    """The Redis Cluster hash slot of every per-stock key of ``code`` (its hash tag)."""
    return key_slot(code.encode())


def _quote_call(
    keys: list[str], header: bytes, blobs: list[bytes], rank_keys: tuple[str, ...]
) -> ScriptCall:
    """``header``: the JSON of the chunk's header rows."""
    argv: list[Any] = [
        header, rk.TICKS_MAXLEN, rk.QUOTE_TTL_S, rk.TICKS_TTL_S, rk.MARKET_TTL_S, *blobs,
    ]  # fmt: skip
    return [*keys, *rank_keys], argv


def candle_call(closed: list[Bar], open_candles: list[Candle]) -> ScriptCall:
    """(KEYS, ARGV) of the CANDLES_LUA call for the ``closed`` bars, then the ``open_candles``."""
    keys = [rk.candles(c["code"], c["trade_date"], c.get("tf", "1m")) for c in closed]
    keys += [rk.candles(c.code, c.trade_date, c.tf) for c in open_candles]
    header = [
        [str(c["minute_ts"]), "1" if c["closed"] else "0", str(rk.candles_ttl_s(c.get("tf", "1m")))]
        for c in closed
    ]
    header += [[str(c.minute_ts), "1" if c.closed else "0", str(rk.candles_ttl_s(c.tf))]
               for c in open_candles]  # fmt: skip
    return keys, [
        orjson.dumps(header),
        *map(orjson.dumps, closed),
        *map(CANDLE_JSON.encode, open_candles),
    ]


def candle_node_calls(
    closed: list[Bar], open_candles: list[Candle], node_of: Callable[[int], str]
) -> list[ScriptCall]:
    """Redis Cluster: one CLUSTER_SCRIPTS candles call per master (``node_of``: a slot's)."""
    by_node: dict[str, tuple[list[Bar], list[Candle]]] = {}
    for bar in closed:
        by_node.setdefault(node_of(code_slot(bar["code"])), ([], []))[0].append(bar)
    for candle in open_candles:
        by_node.setdefault(node_of(code_slot(candle.code)), ([], []))[1].append(candle)
    return [cross_slot_call(candle_call(*group)) for group in by_node.values()]


def bars_call(bars: Mapping[str, Mapping[str, bytes]]) -> ScriptCall:
    """(KEYS, ARGV) of the BARS_LUA call storing each stock's changed bar series."""
    keys: list[str] = []
    counts: list[int] = []
    fields: list[Any] = []
    for code, series in bars.items():
        if series:
            keys.append(rk.bars(code))
            counts.append(len(series))
            for item in series.items():
                fields += item
    return keys, [orjson.dumps(counts), rk.BARS_TTL_S, *fields]


def bars_node_calls(
    bars: Mapping[str, Mapping[str, bytes]], node_of: Callable[[int], str]
) -> list[ScriptCall]:
    """Redis Cluster: one CLUSTER_SCRIPTS bars call per master (``node_of``: a slot's)."""
    by_node: dict[str, dict[str, Mapping[str, bytes]]] = {}
    for code, series in bars.items():
        by_node.setdefault(node_of(code_slot(code)), {})[code] = series
    return [cross_slot_call(bars_call(group)) for group in by_node.values()]


def alert_id(alert: Alert) -> str:
    return f"{alert.code}|{alert.kind}|{alert.exchange_ts}"


def alert_call(alerts: list[Alert], *, cluster: bool = False) -> ScriptCall:
    """(KEYS, ARGV) of the ALERTS_LUA call for ``alerts``."""
    argv: list[Any] = [rk.ALERTS_MAXLEN, rk.MARKET_TTL_S]
    for alert in alerts:
        argv += (alert_id(alert), orjson.dumps(alert.as_record()))
    return [rk.ALERTS, rk.alerts_seen(cluster=cluster)], argv


def history_calls(
    ticks: dict[str, list[tuple[int, bytes]]], max_ticks: int
) -> list[tuple[list[str], list[Any]]]:
    """(KEYS, ARGV) of each HISTORY_LUA call for ``ticks`` (code -> ascending
    ``(exchange_ts, JSON)``, no two with one ``exchange_ts``); a code's ticks
    never span two calls, a call holds about ``max_ticks`` ticks."""
    calls: list[tuple[list[str], list[Any]]] = []
    keys: list[str] = []
    header: list[list[str]] = []
    blobs: list[bytes] = []
    for code, history in ticks.items():
        if not history:
            continue
        keys.append(rk.ticks(code))
        header.append([str(ts) for ts, _ in history])
        blobs += (data for _, data in history)
        if len(blobs) >= max_ticks:
            calls.append((keys, [orjson.dumps(header), rk.TICKS_MAXLEN, rk.TICKS_TTL_S, *blobs]))
            keys, header, blobs = [], [], []
    if header:
        calls.append((keys, [orjson.dumps(header), rk.TICKS_MAXLEN, rk.TICKS_TTL_S, *blobs]))
    return calls
