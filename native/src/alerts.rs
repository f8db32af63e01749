//! `streams.alerts.AlertDetector` compiled: the same per-stock state (limit
//! flags, the fast-move window's rising minima and falling maxima, the
//! volume window, the cooldowns), the same arithmetic operation for
//! operation, so it fires the same alerts at the same ticks with the same
//! values. The session times come from Python; the alert itself (its
//! message and record) is made by the Python function it is given, for the
//! few ticks that fire one. The module doc of streams/alerts.py defines the
//! alerts; the tests run both implementations over the same ticks.

use std::collections::VecDeque;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use rustc_hash::FxHashMap;

/// Float slack when comparing a computed percent or ratio to its threshold (`_EPS`).
const EPS: f64 = 1e-9;

/// The alert kinds, in the order of `Kind`.
const KIND_NAMES: [&str; 6] = [
    "LIMIT_UP_TOUCH",
    "LIMIT_UP_LEAVE",
    "LIMIT_DOWN_TOUCH",
    "LIMIT_DOWN_LEAVE",
    "FAST_MOVE",
    "VOLUME_SPIKE",
];

#[derive(Clone, Copy)]
enum Kind {
    LimitUpTouch,
    LimitUpLeave,
    LimitDownTouch,
    LimitDownLeave,
    FastMove,
    VolumeSpike,
}

/// What a fired alert needs beside its quote (the `detail` of `streams.alerts.alert_of`).
enum Detail {
    Limit,
    Move { moved: f64, reference: f64 },
    Spike { ratio: f64, shares: i64, ms: i64 },
}

/// The quote fields read, as interned keys.
const FIELDS: [&str; 9] = [
    "code",
    "exchange_ts",
    "suspended",
    "trade_date",
    "at_limit_up",
    "at_limit_down",
    "traded",
    "price",
    "volume",
];

/// Local session times in ms of the day, and the clock's offset (`streams.trading_clock`).
#[derive(Clone, Copy)]
struct Sessions {
    offset_ms: i64,
    day_ms: i64,
    am_start: i64,
    am_end: i64,
    pm_start: i64,
    pm_end: i64,
    pm_cont_end: i64,
}

impl Sessions {
    fn ms_of_day(&self, ts: i64) -> i64 {
        (ts + self.offset_ms).rem_euclid(self.day_ms)
    }

    /// `streams.trading_clock.is_continuous`.
    fn is_continuous(&self, ts: i64) -> bool {
        let tod = self.ms_of_day(ts);
        (self.am_start <= tod && tod < self.am_end)
            || (self.pm_start <= tod && tod < self.pm_cont_end)
    }

    /// `streams.trading_clock.trading_clock_ms`.
    fn clock(&self, ts: i64) -> i64 {
        let local = ts + self.offset_ms;
        let tod = local.rem_euclid(self.day_ms);
        let base = local - tod;
        let am_len = self.am_end - self.am_start;
        if tod < self.am_start {
            base
        } else if tod < self.am_end {
            base + tod - self.am_start
        } else if tod < self.pm_start {
            base + am_len
        } else if tod < self.pm_end {
            base + am_len + tod - self.pm_start
        } else {
            base + am_len + self.pm_end - self.pm_start
        }
    }
}

/// (trading clock, value) points, oldest first, at most `cap` (a deque's `maxlen`).
struct Points<T> {
    points: VecDeque<(i64, T)>,
    cap: usize,
}

impl<T: Copy> Points<T> {
    fn new(cap: usize) -> Self {
        Points {
            points: VecDeque::new(),
            cap,
        }
    }

    fn push(&mut self, clock: i64, value: T) {
        if self.points.len() == self.cap {
            self.points.pop_front();
        }
        self.points.push_back((clock, value));
    }
}

struct Stock {
    last_ts: i64,
    trade_date: String,
    lu_reported: bool,
    ld_reported: bool,
    /// increasing prices: the window's minimum first
    mins: Points<f64>,
    /// decreasing prices: the window's maximum first
    maxs: Points<f64>,
    /// cumulative volume of continuous-session ticks
    volumes: Points<i64>,
    last_cum: i64,
    last_continuous: bool,
    /// trading clock of each kind's last alert
    cooldown: [Option<i64>; 6],
}

impl Stock {
    fn new(max_points: usize) -> Self {
        Stock {
            last_ts: -1,
            trade_date: String::new(),
            lu_reported: false,
            ld_reported: false,
            mins: Points::new(max_points),
            maxs: Points::new(max_points),
            volumes: Points::new(max_points),
            last_cum: 0,
            last_continuous: false,
            cooldown: [None; 6],
        }
    }
}

/// A quote's fields the alerts read.
struct Tick<'a> {
    ts: i64,
    suspended: bool,
    trade_date: &'a str,
    at_limit_up: bool,
    at_limit_down: bool,
    traded: bool,
    price: f64,
    volume: i64,
}

/// The thresholds and windows (`AlertConfig`), in trading ms.
struct Config {
    sessions: Sessions,
    move_window_ms: i64,
    vol_window_ms: i64,
    min_history_ms: i64,
    cooldown_ms: i64,
    fast_move_pct: f64,
    volume_spike_ratio: f64,
    volume_min_shares: i64,
    max_points: usize,
}

/// A tick's fired alerts, and the count of those the cooldown held back.
struct Fired {
    alerts: Vec<(Kind, Detail)>,
    cooled_down: u64,
}

impl Fired {
    /// `AlertDetector._emit` without the record: `kind` fires unless its cooldown runs.
    fn emit(
        &mut self,
        cfg: &Config,
        st: &mut Stock,
        kind: Kind,
        detail: Detail,
        clock: i64,
    ) -> bool {
        let slot = &mut st.cooldown[kind as usize];
        if let Some(last) = *slot {
            if clock - last < cfg.cooldown_ms {
                self.cooled_down += 1;
                return false;
            }
        }
        *slot = Some(clock);
        self.alerts.push((kind, detail));
        true
    }
}

/// The per-stock alert state of the stocks one worker sees; `update` is
/// `AlertDetector.update`.
#[pyclass(module = "hqstream_native")]
pub struct AlertWindows {
    keys: Vec<Py<PyString>>,
    /// `alert_of(quote, kind, detail)`: the Alert of a fired alert
    make: Py<PyAny>,
    cfg: Config,
    stocks: FxHashMap<String, Stock>,
    #[pyo3(get)]
    replays: u64,
    #[pyo3(get)]
    suspended: u64,
    #[pyo3(get)]
    cooled_down: u64,
}

impl AlertWindows {
    /// The alerts of one tick: the reference's `update` without the Alert records.
    fn fired(&mut self, code: &str, t: &Tick<'_>) -> Vec<(Kind, Detail)> {
        let cfg = &self.cfg;
        let fresh = !self.stocks.contains_key(code);
        if fresh {
            self.stocks
                .insert(code.to_owned(), Stock::new(cfg.max_points));
        }
        let st = self.stocks.get_mut(code).expect("inserted above");
        if !fresh && t.ts <= st.last_ts {
            self.replays += 1;
            return Vec::new();
        }
        st.last_ts = t.ts;
        if t.suspended {
            self.suspended += 1;
            return Vec::new();
        }
        if t.trade_date != st.trade_date {
            new_day(st, t, fresh, &cfg.sessions);
        }
        let clock = cfg.sessions.clock(t.ts);
        let mut fired = Fired {
            alerts: Vec::new(),
            cooled_down: 0,
        };
        if t.at_limit_up != st.lu_reported {
            let kind = if t.at_limit_up {
                Kind::LimitUpTouch
            } else {
                Kind::LimitUpLeave
            };
            if fired.emit(cfg, st, kind, Detail::Limit, clock) {
                st.lu_reported = t.at_limit_up;
            }
        }
        if t.at_limit_down != st.ld_reported {
            let kind = if t.at_limit_down {
                Kind::LimitDownTouch
            } else {
                Kind::LimitDownLeave
            };
            if fired.emit(cfg, st, kind, Detail::Limit, clock) {
                st.ld_reported = t.at_limit_down;
            }
        }
        if t.traded && t.price > 0.0 {
            fast_move(cfg, st, t.price, clock, &mut fired);
        }
        volume(cfg, st, t, clock, &mut fired);
        self.cooled_down += fired.cooled_down;
        fired.alerts
    }
}

/// `AlertDetector._fast_move`.
fn fast_move(cfg: &Config, st: &mut Stock, price: f64, clock: i64, fired: &mut Fired) {
    let horizon = clock - cfg.move_window_ms;
    while st.mins.points.front().is_some_and(|p| p.0 < horizon) {
        st.mins.points.pop_front();
    }
    while st.maxs.points.front().is_some_and(|p| p.0 < horizon) {
        st.maxs.points.pop_front();
    }
    let mut restart = false;
    if let (Some(&(_, lo)), Some(&(_, hi))) = (st.mins.points.front(), st.maxs.points.front()) {
        let up = (price - lo) / lo * 100.0;
        let down = (price - hi) / hi * 100.0;
        let (moved, reference) = if up >= -down { (up, lo) } else { (down, hi) };
        if moved.abs() >= cfg.fast_move_pct - EPS {
            let detail = Detail::Move { moved, reference };
            restart = fired.emit(cfg, st, Kind::FastMove, detail, clock);
        }
    }
    if restart {
        // one move, one alert: the window starts again
        st.mins.points.clear();
        st.maxs.points.clear();
    }
    while st.mins.points.back().is_some_and(|p| p.1 >= price) {
        st.mins.points.pop_back();
    }
    st.mins.push(clock, price);
    while st.maxs.points.back().is_some_and(|p| p.1 <= price) {
        st.maxs.points.pop_back();
    }
    st.maxs.push(clock, price);
}

/// `AlertDetector._volume`.
fn volume(cfg: &Config, st: &mut Stock, t: &Tick<'_>, clock: i64, fired: &mut Fired) {
    let cum = t.volume;
    if cum < st.last_cum {
        // the counter went backwards (a data fix): start over
        st.volumes.points.clear();
        st.last_continuous = false;
    }
    st.last_cum = cum;
    if !cfg.sessions.is_continuous(t.ts) {
        st.last_continuous = false;
        return;
    }
    if st.last_continuous {
        if let Some(detail) = spike(cfg, &st.volumes, clock, cum) {
            fired.emit(cfg, st, Kind::VolumeSpike, detail, clock);
        }
    }
    st.volumes.push(clock, cum);
    let horizon = clock - cfg.vol_window_ms;
    while st.volumes.points.len() > 1 && st.volumes.points[1].0 <= horizon {
        st.volumes.points.pop_front();
    }
    st.last_continuous = true;
}

/// `AlertDetector._spike`: this tick's volume rate when it is a spike.
fn spike(cfg: &Config, volumes: &Points<i64>, clock: i64, cum: i64) -> Option<Detail> {
    let (first_clock, first_cum) = *volumes.points.front()?;
    let (prev_clock, prev_cum) = *volumes.points.back()?;
    let dt_ms = clock - prev_clock;
    let dv = cum - prev_cum;
    let span = prev_clock - first_clock;
    if dt_ms <= 0 || dv < cfg.volume_min_shares || span <= 0 || span < cfg.min_history_ms {
        return None;
    }
    // shares per trading ms over the window
    let avg = true_div(prev_cum - first_cum, span);
    if avg <= 0.0 {
        return None; // no trade in the window: a ratio means nothing
    }
    let ratio = true_div(dv, dt_ms) / avg;
    if ratio < cfg.volume_spike_ratio - EPS {
        return None;
    }
    Some(Detail::Spike {
        ratio,
        shares: dv,
        ms: dt_ms,
    })
}

/// Python's `a / b` of two ints when both are below 2**53 in magnitude, where it
/// divides their floats: every volume and span here (parse keeps a volume below 10**13).
fn true_div(a: i64, b: i64) -> f64 {
    a as f64 / b as f64
}

/// `AlertDetector._new_day`.
fn new_day(st: &mut Stock, t: &Tick<'_>, fresh: bool, sessions: &Sessions) {
    st.trade_date.clear();
    st.trade_date.push_str(t.trade_date);
    st.mins.points.clear();
    st.maxs.points.clear();
    st.volumes.points.clear();
    st.last_cum = 0;
    st.last_continuous = false;
    if fresh && sessions.ms_of_day(t.ts) >= sessions.am_start {
        // first seen mid-session: the limit state as it is, no alert
        st.lu_reported = t.at_limit_up;
        st.ld_reported = t.at_limit_down;
    } else {
        st.lu_reported = false;
        st.ld_reported = false;
    }
}

#[pymethods]
impl AlertWindows {
    /// `windows`: `(fast_move_window_ms, volume_window_ms, volume_min_history_ms,
    /// cooldown_ms)`; `sessions`: `(SHANGHAI_OFFSET_MS, DAY_MS, AM_START, AM_END,
    /// PM_START, PM_END, PM_CONT_END)`; `make(quote, kind, detail)` makes a fired
    /// alert's record (`detail`: `()`, `(move, reference)` or `(ratio, shares, ms)`).
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        make: Py<PyAny>,
        windows: (i64, i64, i64, i64),
        sessions: (i64, i64, i64, i64, i64, i64, i64),
        fast_move_pct: f64,
        volume_spike_ratio: f64,
        volume_min_shares: i64,
        max_points: usize,
    ) -> PyResult<Self> {
        if max_points < 2 {
            return Err(PyValueError::new_err("max_points must be >= 2"));
        }
        let (offset_ms, day_ms, am_start, am_end, pm_start, pm_end, pm_cont_end) = sessions;
        if day_ms <= 0 {
            return Err(PyValueError::new_err("a day must be longer than 0 ms"));
        }
        Ok(AlertWindows {
            keys: FIELDS
                .iter()
                .map(|name| PyString::intern(py, name).unbind())
                .collect(),
            make,
            cfg: Config {
                sessions: Sessions {
                    offset_ms,
                    day_ms,
                    am_start,
                    am_end,
                    pm_start,
                    pm_end,
                    pm_cont_end,
                },
                move_window_ms: windows.0,
                vol_window_ms: windows.1,
                min_history_ms: windows.2,
                cooldown_ms: windows.3,
                fast_move_pct,
                volume_spike_ratio,
                volume_min_shares,
                max_points,
            },
            stocks: FxHashMap::default(),
            replays: 0,
            suspended: 0,
            cooled_down: 0,
        })
    }

    /// The alerts `quote` triggers (usually none), as `AlertDetector.update`.
    fn update<'py>(
        &mut self,
        py: Python<'py>,
        quote: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyList>> {
        let field = |i: usize| -> PyResult<Bound<'py, PyAny>> {
            let key = self.keys[i].bind(py);
            quote
                .get_item(key)?
                .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(FIELDS[i]))
        };
        let code_obj = field(0)?;
        let code = code_obj.cast::<PyString>()?.to_str()?;
        let trade_date_obj = field(3)?;
        let tick = Tick {
            ts: field(1)?.extract()?,
            suspended: field(2)?.extract()?,
            trade_date: trade_date_obj.cast::<PyString>()?.to_str()?,
            at_limit_up: field(4)?.extract()?,
            at_limit_down: field(5)?.extract()?,
            traded: field(6)?.extract()?,
            price: field(7)?.extract()?,
            volume: field(8)?.extract()?,
        };
        let fired = self.fired(code, &tick);
        let alerts = PyList::empty(py);
        for (kind, detail) in fired {
            let detail = match detail {
                Detail::Limit => PyTuple::empty(py),
                Detail::Move { moved, reference } => (moved, reference).into_pyobject(py)?,
                Detail::Spike { ratio, shares, ms } => (ratio, shares, ms).into_pyobject(py)?,
            };
            let made = self
                .make
                .bind(py)
                .call1((quote, KIND_NAMES[kind as usize], detail))?;
            alerts.append(made)?;
        }
        Ok(alerts)
    }

    /// Drop the state of `codes` (their partitions moved to another worker).
    fn forget(&mut self, codes: Vec<String>) {
        for code in codes {
            self.stocks.remove(&code);
        }
    }

    /// Stocks held.
    fn __len__(&self) -> usize {
        self.stocks.len()
    }

    /// `(minima, maxima, volume points, cooldowns)` a stock holds (None: not held).
    fn held(&self, code: &str) -> Option<(usize, usize, usize, usize)> {
        self.stocks.get(code).map(|st| {
            let cooldowns = st.cooldown.iter().flatten().count();
            (
                st.mins.points.len(),
                st.maxs.points.len(),
                st.volumes.points.len(),
                cooldowns,
            )
        })
    }
}
