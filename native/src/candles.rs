//! `streams.candles.CandleBuilder` compiled: each stock's cumulative base and
//! open candle, the index of open candles by their end, the same folding
//! tick by tick (the same float sums, the same rounding of the amount), so
//! the same candles at the same ticks. The session bounds come from
//! Python (`schemas.timeframes`); the `Candle` records are made by calling
//! the Python class. The module doc of streams/candles.py defines the
//! candles; the tests run both builders over the same ticks.

use std::collections::{BTreeMap, BTreeSet};

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use rustc_hash::FxHashMap;

use crate::pyround::round_digits;

/// The quote fields read, as interned keys.
const FIELDS: [&str; 9] = [
    "code",
    "exchange_ts",
    "market",
    "volume",
    "amount",
    "trade_date",
    "suspended",
    "traded",
    "price",
];
/// Read only when a candle opens.
const PREV_CLOSE: &str = "prev_close";

/// Local session bounds in ms of the day (`schemas.timeframes`), and the clock's offset.
#[derive(Clone, Copy)]
struct Sessions {
    offset_ms: i64,
    day_ms: i64,
    minute_ms: i64,
    open_auction_start: i64,
    am_start: i64,
    am_end: i64,
    pm_start: i64,
    pm_end: i64,
}

impl Sessions {
    fn ms_of_day(&self, ts: i64) -> i64 {
        (ts + self.offset_ms).rem_euclid(self.day_ms)
    }

    /// `schemas.timeframes.candle_minute`.
    fn candle_minute(&self, ts: i64, grace: i64) -> Option<i64> {
        let tod = self.ms_of_day(ts);
        let in_minute = tod.rem_euclid(self.minute_ms);
        if tod < self.open_auction_start {
            None
        } else if tod < self.am_start {
            Some(ts - tod + self.am_start)
        } else if tod < self.am_end {
            Some(ts - in_minute)
        } else if tod < self.am_end + grace {
            Some(ts - tod + self.am_end - self.minute_ms)
        } else if tod < self.pm_start {
            None
        } else if tod < self.pm_end {
            Some(ts - in_minute)
        } else if tod < self.pm_end + grace {
            Some(ts - tod + self.pm_end - self.minute_ms)
        } else {
            None
        }
    }

    /// `schemas.timeframes.candle_end`.
    fn candle_end(&self, minute: i64, grace: i64) -> i64 {
        let end = minute + self.minute_ms;
        let tod_end = self.ms_of_day(end);
        if tod_end == self.am_end || tod_end == self.pm_end {
            end + grace
        } else {
            end
        }
    }

    /// `schemas.timeframes.is_opening_minute`.
    fn is_opening_minute(&self, minute: i64) -> bool {
        self.ms_of_day(minute) == self.am_start
    }
}

/// `streams.candles._Stock`.
struct Stock {
    code: Py<PyString>,
    market: Py<PyAny>,
    trade_date: Py<PyString>,
    last_ts: i64,
    base_volume: i64,
    base_amount: f64,
    last_price: f64,
    closed_through: i64,
    minute: i64,
    end: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    ref_price: f64,
    volume: i64,
    amount: f64,
    ticks: i64,
    has_trade: bool,
}

/// `CandleCounters`' fields, in order.
#[derive(Default)]
struct Counters {
    closed: u64,
    late: u64,
    after_close: u64,
    out_of_session: u64,
    suspended: u64,
    counter_resets: u64,
    joined_midday: u64,
    no_trade: u64,
}

/// 1-minute candles for every stock a worker sees: `CandleBuilder`'s state.
#[pyclass(module = "hqstream_native")]
pub struct CandleBook {
    keys: Vec<Py<PyString>>,
    prev_close: Py<PyString>,
    /// `streams.candles.Candle`
    candle: Py<PyAny>,
    sessions: Sessions,
    grace: i64,
    stocks: FxHashMap<String, Stock>,
    /// candle end -> the codes whose candle is open until then
    open_by_end: BTreeMap<i64, BTreeSet<String>>,
    counters: Counters,
    scratch: String,
}

impl CandleBook {
    /// `_Stock.record`: the candle's record.
    fn record(&mut self, py: Python<'_>, code: &str, closed: bool) -> PyResult<Py<PyAny>> {
        let st = &self.stocks[code];
        let (o, h, l, c) = if st.has_trade {
            (st.open, st.high, st.low, st.close)
        } else {
            (st.ref_price, st.ref_price, st.ref_price, st.ref_price)
        };
        let amount = round_digits(st.amount, 2, &mut self.scratch);
        let args = (
            st.code.clone_ref(py),
            st.market.clone_ref(py),
            st.trade_date.clone_ref(py),
            st.minute,
            o,
            h,
            l,
            c,
            st.volume,
            amount,
            st.ticks,
            closed,
        );
        Ok(self.candle.bind(py).call1(args)?.unbind())
    }

    /// `CandleBuilder._close`.
    fn close(&mut self, py: Python<'_>, code: &str) -> PyResult<Py<PyAny>> {
        let candle = self.record(py, code, true)?;
        let st = self.stocks.get_mut(code).expect("an open candle's stock");
        if let Some(codes) = self.open_by_end.get_mut(&st.end) {
            codes.remove(code);
            if codes.is_empty() {
                self.open_by_end.remove(&st.end);
            }
        }
        st.closed_through = st.minute;
        st.minute = -1;
        self.counters.closed += 1;
        Ok(candle)
    }

    /// `CandleBuilder._start`.
    fn start(&mut self, code: &str, minute: i64, quote: &Bound<'_, PyDict>) -> PyResult<()> {
        let py = quote.py();
        let end = self.sessions.candle_end(minute, self.grace);
        let st = self.stocks.get_mut(code).expect("the stock is in the book");
        st.minute = minute;
        st.end = end;
        st.volume = 0;
        st.amount = 0.0;
        st.ticks = 0;
        st.has_trade = false;
        st.ref_price = if st.last_price != 0.0 {
            st.last_price
        } else {
            quote
                .get_item(self.prev_close.bind(py))?
                .ok_or_else(|| PyKeyError::new_err(PREV_CLOSE))?
                .extract()?
        };
        self.open_by_end
            .entry(end)
            .or_default()
            .insert(code.to_owned());
        Ok(())
    }
}

#[pymethods]
impl CandleBook {
    /// `candle`: the `Candle` class; `sessions`: `(SHANGHAI_OFFSET_MS, DAY_MS,
    /// MINUTE_MS, OPEN_AUCTION_START, AM_START, AM_END, PM_START, PM_END)`.
    #[new]
    fn new(
        py: Python<'_>,
        candle: Py<PyAny>,
        close_grace_ms: i64,
        sessions: (i64, i64, i64, i64, i64, i64, i64, i64),
    ) -> PyResult<Self> {
        let (offset_ms, day_ms, minute_ms, open_auction_start, am_start, am_end, pm_start, pm_end) =
            sessions;
        if day_ms <= 0 || minute_ms <= 0 {
            return Err(PyValueError::new_err(
                "a day and a minute last more than 0 ms",
            ));
        }
        Ok(CandleBook {
            keys: FIELDS
                .iter()
                .map(|name| PyString::intern(py, name).unbind())
                .collect(),
            prev_close: PyString::intern(py, PREV_CLOSE).unbind(),
            candle,
            sessions: Sessions {
                offset_ms,
                day_ms,
                minute_ms,
                open_auction_start,
                am_start,
                am_end,
                pm_start,
                pm_end,
            },
            grace: close_grace_ms,
            stocks: FxHashMap::default(),
            open_by_end: BTreeMap::new(),
            counters: Counters::default(),
            scratch: String::new(),
        })
    }

    /// `CandleBuilder.update`: fold one quote; the candles it closed.
    fn update<'py>(
        &mut self,
        py: Python<'py>,
        quote: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyList>> {
        // every field read at once: the book is borrowed mutably below
        let mut fields = Vec::with_capacity(FIELDS.len());
        for (key, name) in self.keys.iter().zip(FIELDS) {
            fields.push(
                quote
                    .get_item(key.bind(py))?
                    .ok_or_else(|| PyKeyError::new_err(name))?,
            );
        }
        let field = |i: usize| -> PyResult<Bound<'py, PyAny>> { Ok(fields[i].clone()) };
        let code_obj = field(0)?.cast_into::<PyString>()?;
        let code = code_obj.to_str()?;
        let ts: i64 = field(1)?.extract()?;
        let closed = PyList::empty(py);
        match self.stocks.get(code) {
            None => {
                let market = field(2)?.unbind();
                let stock = Stock {
                    code: code_obj.clone().unbind(),
                    market,
                    trade_date: PyString::intern(py, "").unbind(),
                    last_ts: -1,
                    base_volume: 0,
                    base_amount: 0.0,
                    last_price: 0.0,
                    closed_through: -1,
                    minute: -1,
                    end: 0,
                    open: 0.0,
                    high: 0.0,
                    low: 0.0,
                    close: 0.0,
                    ref_price: 0.0,
                    volume: 0,
                    amount: 0.0,
                    ticks: 0,
                    has_trade: false,
                };
                self.stocks.insert(code.to_owned(), stock);
            }
            Some(st) if ts <= st.last_ts => {
                self.counters.late += 1;
                return Ok(closed);
            }
            Some(_) => {}
        }
        let st = self.stocks.get_mut(code).expect("inserted above");
        st.last_ts = ts;
        if st.minute >= 0 && ts >= st.end {
            closed.append(self.close(py, code)?)?;
        }
        let Some(minute) = self.sessions.candle_minute(ts, self.grace) else {
            self.counters.out_of_session += 1;
            return Ok(closed);
        };
        let st = self.stocks.get_mut(code).expect("the stock is in the book");
        if minute <= st.closed_through {
            self.counters.late += 1;
            self.counters.after_close += 1;
            return Ok(closed);
        }
        let volume: i64 = field(3)?.extract()?;
        let amount: f64 = field(4)?.extract()?;
        let trade_date = field(5)?.cast_into::<PyString>()?;
        if trade_date.to_str()? != st.trade_date.bind(py).to_str()? {
            st.trade_date = trade_date.unbind();
            if self.sessions.is_opening_minute(minute) {
                st.base_volume = 0;
                st.base_amount = 0.0;
            } else {
                st.base_volume = volume;
                st.base_amount = amount;
                self.counters.joined_midday += 1;
            }
            st.last_price = 0.0;
        }
        if field(6)?.is_truthy()? {
            // the day's base is set, but no candle opens
            self.counters.suspended += 1;
            return Ok(closed);
        }
        if !field(7)?.is_truthy()? {
            // no trade yet today: nothing to draw
            self.counters.no_trade += 1;
            return Ok(closed);
        }
        if st.minute < 0 {
            self.start(code, minute, quote)?;
        } else if minute != st.minute {
            // cannot happen: candle_minute is monotonic in ts
            closed.append(self.close(py, code)?)?;
            self.start(code, minute, quote)?;
        }
        let price: f64 = field(8)?.extract()?;
        let st = self.stocks.get_mut(code).expect("the stock is in the book");
        let dv = volume - st.base_volume;
        let da = amount - st.base_amount;
        if dv < 0 || da < 0.0 {
            self.counters.counter_resets += 1;
        }
        if dv > 0 {
            st.volume += dv;
            st.base_volume = volume;
        }
        if da > 0.0 {
            st.amount += da;
            st.base_amount = amount;
        }
        if price > 0.0 {
            if st.has_trade {
                if price > st.high {
                    st.high = price;
                } else if price < st.low {
                    st.low = price;
                }
            } else {
                st.open = price;
                st.high = price;
                st.low = price;
                st.has_trade = true;
            }
            st.close = price;
            st.last_price = price;
        }
        st.ticks += 1;
        Ok(closed)
    }

    /// `CandleBuilder.closes`: would a quote of `code` at `ts` close its open candle?
    fn closes(&self, code: &str, ts: i64) -> bool {
        self.stocks
            .get(code)
            .is_some_and(|st| st.minute >= 0 && ts >= st.end)
    }

    /// `CandleBuilder.current`: the open candle of `code` (`closed=False`), or None.
    fn current(&mut self, py: Python<'_>, code: &str) -> PyResult<Option<Py<PyAny>>> {
        match self.stocks.get(code) {
            Some(st) if st.minute >= 0 => Ok(Some(self.record(py, code, false)?)),
            _ => Ok(None),
        }
    }

    /// The open candles of `codes` (those without one left out), in their order.
    fn current_of(&mut self, py: Python<'_>, codes: Vec<String>) -> PyResult<Vec<Py<PyAny>>> {
        let mut out = Vec::with_capacity(codes.len());
        for code in codes {
            if let Some(candle) = self.current(py, &code)? {
                out.push(candle);
            }
        }
        Ok(out)
    }

    /// `CandleBuilder.flush`: close every candle whose minute (plus grace) is over at
    /// `now_ms` (and, with `clock_of`, over on its stock's clock), at most `limit`
    /// (earliest ends first, then by code).
    #[pyo3(signature = (now_ms, clock_of=None, limit=None))]
    fn flush(
        &mut self,
        py: Python<'_>,
        now_ms: i64,
        clock_of: Option<Bound<'_, PyAny>>,
        limit: Option<usize>,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let due: Vec<(i64, Vec<String>)> = self
            .open_by_end
            .range(..=now_ms)
            .map(|(end, codes)| (*end, codes.iter().cloned().collect()))
            .collect();
        let mut closed = Vec::new();
        for (end, codes) in due {
            for code in codes {
                let ready = match &clock_of {
                    None => true,
                    Some(f) => f.call1((code.as_str(),))?.extract::<i64>()? >= end,
                };
                if ready {
                    closed.push(self.close(py, &code)?);
                    if Some(closed.len()) == limit {
                        return Ok(closed);
                    }
                }
            }
        }
        Ok(closed)
    }

    /// `CandleBuilder.close_all`: close every open candle (end of day, shutdown).
    fn close_all(&mut self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let all: Vec<String> = self.open_by_end.values().flatten().cloned().collect();
        all.iter().map(|code| self.close(py, code)).collect()
    }

    /// `CandleBuilder.forget`: drop the state of `codes`; returns how many were held.
    fn forget(&mut self, codes: Vec<String>) -> usize {
        let mut dropped = 0;
        for code in codes {
            let Some(st) = self.stocks.remove(&code) else {
                continue;
            };
            dropped += 1;
            if st.minute >= 0 {
                if let Some(open) = self.open_by_end.get_mut(&st.end) {
                    open.remove(&code);
                    if open.is_empty() {
                        self.open_by_end.remove(&st.end);
                    }
                }
            }
        }
        dropped
    }

    /// Candles open.
    fn open_count(&self) -> usize {
        self.open_by_end.values().map(BTreeSet::len).sum()
    }

    /// `CandleCounters`' fields, in order.
    fn counters(&self) -> [u64; 8] {
        let c = &self.counters;
        [
            c.closed,
            c.late,
            c.after_close,
            c.out_of_session,
            c.suspended,
            c.counter_resets,
            c.joined_midday,
            c.no_trade,
        ]
    }
}
