//! `streams.market_stats.MarketStats`' book compiled: each stock's newest
//! figures and flags, each market's counts and integer sums, kept the same
//! way tick by tick (the same rounding, the same integers), and the walks a
//! partial needs (a market's top-N and per-board breadth). The Python class
//! `CompiledMarketStats` wraps it and builds the same records from what it
//! returns; the module doc of streams/market_stats.py defines the figures,
//! and the tests run both implementations over the same ticks.

use std::cmp::Ordering;

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use rustc_hash::FxHashMap;

/// change_pct summed in 1e-4 percent (`_PCT_SCALE`)
const PCT_SCALE: f64 = 10_000.0;
/// amount summed in cents (`_AMOUNT_SCALE`)
const AMOUNT_SCALE: f64 = 100.0;
/// an Avro long: every count and sum saturates there (and at -LONG_MAX)
const LONG_MAX: i128 = i64::MAX as i128;

/// The quote fields read, as interned keys.
const FIELDS: [&str; 15] = [
    "code",
    "trade_date",
    "exchange_ts",
    "market",
    "board",
    "name",
    "price",
    "change_pct",
    "volume",
    "amount",
    "suspended",
    "traded",
    "prev_close",
    "at_limit_up",
    "at_limit_down",
];

/// The boards in the order the records list them (`BOARDS`).
const BOARDS: [&str; 4] = ["MAIN", "STAR", "CHINEXT", "BJ"];

/// A stock's contribution: `_Stock`.
struct Row {
    code: Py<PyString>,
    name: Py<PyString>,
    market: usize,
    board: usize,
    ts: i64,
    price: f64,
    change_pct: f64,
    change_q: i64,
    volume: i64,
    amount: f64,
    amount_cents: i64,
    suspended: bool,
    /// traded and not suspended: in breadth and the gainers and losers
    ranked: bool,
    trade_date: String,
    /// price against prev_close: +1, 0, -1
    direction: i8,
    limit_up: bool,
    limit_down: bool,
    /// in its market's totals (a quote of the current trade date)
    counted: bool,
}

/// Counts and integer sums of one market: `_Totals` (sums wide enough for any market).
#[derive(Default)]
struct Totals {
    stocks: i128,
    advancers: i128,
    decliners: i128,
    limit_up: i128,
    limit_down: i128,
    suspended: i128,
    traded: i128,
    volume: i128,
    amount_cents: i128,
    change_sum: i128,
}

impl Totals {
    fn apply(&mut self, s: &Row, sign: i128) {
        self.stocks += sign;
        if s.suspended {
            self.suspended += sign;
        }
        if s.ranked {
            self.traded += sign;
            self.change_sum += sign * i128::from(s.change_q);
            if s.direction > 0 {
                self.advancers += sign;
            } else if s.direction < 0 {
                self.decliners += sign;
            }
        }
        if s.limit_up {
            self.limit_up += sign;
        }
        if s.limit_down {
            self.limit_down += sign;
        }
        self.volume += sign * i128::from(s.volume);
        self.amount_cents += sign * i128::from(s.amount_cents);
    }

    /// `Counts`' fields in order, saturated (`_saturate`).
    fn counts(&self) -> [i64; 10] {
        [
            self.stocks,
            self.advancers,
            self.decliners,
            self.limit_up,
            self.limit_down,
            self.suspended,
            self.traded,
            self.volume,
            self.amount_cents,
            self.change_sum,
        ]
        .map(|v| v.clamp(-LONG_MAX, LONG_MAX) as i64)
    }
}

/// Python's `round(x)` of a float for the integers kept here: half to even; an
/// error where Python's would fail (not finite) or exceed an i64 (beyond any
/// quote parse lets through).
fn round_checked(x: f64, what: &str) -> PyResult<i64> {
    let r = x.round_ties_even();
    if r.is_finite() && r.abs() < 9.2e18 {
        Ok(r as i64)
    } else {
        Err(PyValueError::new_err(format!("{what}: cannot count {x}")))
    }
}

/// The index of a quote's board in BOARDS.
fn board_index(board: &str) -> PyResult<usize> {
    BOARDS
        .iter()
        .position(|b| *b == board)
        .ok_or_else(|| PyKeyError::new_err(format!("board {board:?}")))
}

/// One worker's statistics book: `MarketStats`' update, forget and the walks of
/// its partials.
#[pyclass(module = "hqstream_native")]
pub struct StatsBook {
    keys: Vec<Py<PyString>>,
    markets: Vec<String>,
    stocks: FxHashMap<String, Row>,
    totals: Vec<Totals>,
    /// markets whose partial must be computed again
    changed: Vec<bool>,
    /// the newest trade date seen: only its quotes count
    #[pyo3(get)]
    trade_date: String,
    #[pyo3(get)]
    replays_ignored: u64,
}

impl StatsBook {
    /// A stock's row from `quote` (`_Stock.set`), or the error Python's would raise.
    fn row(&self, py: Python<'_>, quote: &Bound<'_, PyDict>) -> PyResult<Row> {
        let field = |i: usize| -> PyResult<Bound<'_, PyAny>> {
            quote
                .get_item(self.keys[i].bind(py))?
                .ok_or_else(|| PyKeyError::new_err(FIELDS[i]))
        };
        let code = field(0)?.cast_into::<PyString>()?;
        let trade_date: String = field(1)?.extract()?;
        let ts: i64 = field(2)?.extract()?;
        let market = self.market_index(field(3)?.cast::<PyString>()?.to_str()?)?;
        let board_obj = field(4)?;
        let board = board_index(board_obj.cast::<PyString>()?.to_str()?)?;
        let name = field(5)?.cast_into::<PyString>()?;
        let price: f64 = field(6)?.extract()?;
        let change_pct: f64 = field(7)?.extract()?;
        let change_q = round_checked(change_pct * PCT_SCALE, "change_pct")?;
        let volume: i64 = field(8)?.extract()?;
        let amount: f64 = field(9)?.extract()?;
        let amount_cents = round_checked(amount * AMOUNT_SCALE, "amount")?;
        let suspended = field(10)?.is_truthy()?;
        let ranked = field(11)?.is_truthy()? && !suspended;
        let prev_cents = round_checked(field(12)?.extract::<f64>()? * 100.0, "prev_close")?;
        let diff = if ranked && prev_cents > 0 {
            round_checked(price * 100.0, "price")? - prev_cents
        } else {
            0
        };
        let limit_up = field(13)?.is_truthy()? && !suspended;
        let limit_down = field(14)?.is_truthy()? && !suspended;
        Ok(Row {
            code: code.unbind(),
            name: name.unbind(),
            market,
            board,
            ts,
            price,
            change_pct,
            change_q,
            volume,
            amount,
            amount_cents,
            suspended,
            ranked,
            trade_date,
            direction: diff.signum() as i8,
            limit_up,
            limit_down,
            counted: false,
        })
    }

    /// `_new_day`: a newer trade date; every stock on an older one stops counting.
    fn new_day(&mut self, trade_date: &str) {
        self.trade_date = trade_date.to_owned();
        self.changed.iter_mut().for_each(|c| *c = true);
        for s in self.stocks.values_mut() {
            if s.counted {
                self.totals[s.market].apply(s, -1);
                s.counted = false;
            }
        }
    }

    /// `_count`: into its market's totals if its quote is of the current trade date.
    fn count(totals: &mut [Totals], trade_date: &str, s: &mut Row) {
        if s.trade_date == trade_date {
            totals[s.market].apply(s, 1);
            s.counted = true;
        }
    }

    /// The counted stocks of `market`.
    fn pool(&self, market: usize) -> impl Iterator<Item = &Row> {
        self.stocks
            .values()
            .filter(move |s| s.market == market && s.counted)
    }
}

/// The first `n` of `rows` by `key` (a total order: ties by code), best first.
fn top<'a>(
    py: Python<'_>,
    mut rows: Vec<&'a Row>,
    n: usize,
    key: impl Fn(&Row, &Row) -> Ordering,
) -> Vec<&'a Row> {
    let by = |a: &&Row, b: &&Row| key(a, b).then_with(|| by_code(py, a, b));
    if rows.len() > n && n > 0 {
        rows.select_nth_unstable_by(n - 1, by);
        rows.truncate(n);
    }
    rows.truncate(n);
    rows.sort_unstable_by(by);
    rows
}

fn by_code(py: Python<'_>, a: &Row, b: &Row) -> Ordering {
    let (a, b) = (a.code.bind(py), b.code.bind(py));
    a.to_str()
        .unwrap_or_default()
        .cmp(b.to_str().unwrap_or_default())
}

fn total(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

/// A `RankEntry`'s fields.
type Entry = (Py<PyString>, Py<PyString>, f64, f64, f64);

fn entries(py: Python<'_>, rows: Vec<&Row>) -> Vec<Entry> {
    rows.into_iter()
        .map(|s| {
            (
                s.code.clone_ref(py),
                s.name.clone_ref(py),
                s.price,
                s.change_pct,
                s.amount,
            )
        })
        .collect()
}

#[pymethods]
impl StatsBook {
    /// `markets`: the market names quotes may carry, in the order the records list them.
    #[new]
    fn new(py: Python<'_>, markets: Vec<String>) -> Self {
        let n = markets.len();
        StatsBook {
            keys: FIELDS
                .iter()
                .map(|name| PyString::intern(py, name).unbind())
                .collect(),
            markets,
            stocks: FxHashMap::default(),
            totals: (0..n).map(|_| Totals::default()).collect(),
            changed: vec![true; n],
            trade_date: String::new(),
            replays_ignored: 0,
        }
    }

    /// `MarketStats.update`: the stock's contribution replaced with this quote's,
    /// unless it is older. A quote that raises leaves the books consistent (the
    /// stock is dropped: its old contribution is out).
    fn update(&mut self, py: Python<'_>, quote: &Bound<'_, PyDict>) -> PyResult<()> {
        let trade_date_obj = quote
            .get_item(self.keys[1].bind(py))?
            .ok_or_else(|| PyKeyError::new_err("trade_date"))?;
        let trade_date = trade_date_obj.cast::<PyString>()?.to_str()?;
        if trade_date > self.trade_date.as_str() {
            self.new_day(trade_date);
        }
        let code_obj = quote
            .get_item(self.keys[0].bind(py))?
            .ok_or_else(|| PyKeyError::new_err("code"))?;
        let code = code_obj.cast::<PyString>()?.to_str()?;
        let Some(old) = self.stocks.get_mut(code) else {
            let mut s = self.row(py, quote)?;
            self.changed[s.market] = true;
            StatsBook::count(&mut self.totals, &self.trade_date, &mut s);
            self.stocks.insert(code.to_owned(), s);
            return Ok(());
        };
        let ts: i64 = quote
            .get_item(self.keys[2].bind(py))?
            .ok_or_else(|| PyKeyError::new_err("exchange_ts"))?
            .extract()?;
        if ts < old.ts {
            self.replays_ignored += 1;
            return Ok(());
        }
        self.changed[old.market] = true;
        if old.counted {
            self.totals[old.market].apply(old, -1);
            old.counted = false;
        }
        let mut s = match self.row(py, quote) {
            Ok(s) => s,
            Err(e) => {
                self.stocks.remove(code);
                return Err(e);
            }
        };
        self.changed[s.market] = true;
        StatsBook::count(&mut self.totals, &self.trade_date, &mut s);
        *self.stocks.get_mut(code).expect("held above") = s;
        Ok(())
    }

    /// `MarketStats.forget`: drop stocks (partitions revoked); returns how many.
    fn forget(&mut self, codes: Vec<String>) -> usize {
        let mut dropped = 0;
        for code in codes {
            if let Some(s) = self.stocks.remove(&code) {
                self.changed[s.market] = true;
                if s.counted {
                    self.totals[s.market].apply(&s, -1);
                }
                dropped += 1;
            }
        }
        dropped
    }

    /// The markets changed since the last call (their partials must be computed again).
    fn take_changed(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, changed) in self.changed.iter_mut().enumerate() {
            if *changed {
                out.push(self.markets[i].clone());
                *changed = false;
            }
        }
        out
    }

    /// A market's counts and sums, in `Counts`' order, saturated to an Avro long.
    fn counts(&self, market: &str) -> PyResult<[i64; 10]> {
        let m = self.market_index(market)?;
        Ok(self.totals[m].counts())
    }

    /// A market's local top-N: `(gainers, losers, turnover)`, each a list of
    /// `(code, name, price, change_pct, amount)`, best first (`_local_tops`).
    #[allow(clippy::type_complexity)]
    fn tops<'py>(
        &self,
        py: Python<'py>,
        market: &str,
        top_n: usize,
    ) -> PyResult<(Vec<Entry>, Vec<Entry>, Vec<Entry>)> {
        let m = self.market_index(market)?;
        let ranked: Vec<&Row> = self.pool(m).filter(|s| s.ranked).collect();
        let turnover: Vec<&Row> = self
            .pool(m)
            .filter(|s| s.amount > 0.0 && !s.suspended)
            .collect();
        let gainers = top(py, ranked.clone(), top_n, |a, b| {
            total(b.change_pct, a.change_pct)
        });
        let losers = top(py, ranked, top_n, |a, b| total(a.change_pct, b.change_pct));
        let by_amount = top(py, turnover, top_n, |a, b| total(b.amount, a.amount));
        Ok((
            entries(py, gainers),
            entries(py, losers),
            entries(py, by_amount),
        ))
    }

    /// A market's breadth per board: `(board, stocks, advancers, decliners,
    /// unchanged, suspended, not_traded_yet, limit_up, limit_down)`, in BOARDS
    /// order, boards without a counted stock left out (`_board_counts`).
    fn boards<'py>(&self, py: Python<'py>, market: &str) -> PyResult<Bound<'py, PyList>> {
        let m = self.market_index(market)?;
        let mut counts = [[0i64; 8]; BOARDS.len()];
        for s in self.pool(m) {
            let c = &mut counts[s.board];
            c[0] += 1;
            if s.suspended {
                c[4] += 1;
            } else if !s.ranked {
                c[5] += 1;
            } else if s.direction > 0 {
                c[1] += 1;
            } else if s.direction < 0 {
                c[2] += 1;
            } else {
                c[3] += 1;
            }
            c[6] += i64::from(s.limit_up);
            c[7] += i64::from(s.limit_down);
        }
        let out = PyList::empty(py);
        for (board, c) in BOARDS.iter().zip(counts) {
            if c[0] > 0 {
                out.append((*board, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]))?;
            }
        }
        Ok(out)
    }

    /// Stocks held.
    fn __len__(&self) -> usize {
        self.stocks.len()
    }
}

impl StatsBook {
    /// The index of a market's name in `markets`.
    fn market_index(&self, market: &str) -> PyResult<usize> {
        self.markets
            .iter()
            .position(|m| m == market)
            .ok_or_else(|| PyKeyError::new_err(format!("market {market:?}")))
    }
}
