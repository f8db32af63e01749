//! `schemas.indicators.IndicatorState` compiled: the same state, the same
//! arithmetic operation for operation (so every value is the Python
//! reference's to the last bit), the same JSON. The module doc of
//! schemas/indicators.py defines the indicators; the tests compare the two
//! implementations bar by bar and through each other's JSON.

use std::collections::VecDeque;

use pyo3::conversion::FromPyObjectOwned;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyString, PyTuple};

use crate::quote_json::{put_long, put_string, put_thousandths};

const MA_PERIODS: [usize; 4] = [5, 10, 20, 60];
const EMA_PERIODS: [usize; 2] = [12, 26];
const MACD_FAST: usize = 12;
const MACD_SLOW: usize = 26;
const MACD_SIGNAL: usize = 9;
const RSI_PERIODS: [usize; 3] = [6, 12, 24];
const KDJ_N: usize = 9;
const BOLL_N: usize = 20;
const BOLL_K: f64 = 2.0;
const ATR_N: usize = 14;
const TA_EPSILON: f64 = 0.000_000_000_000_01;
/// max(MA_PERIODS, BOLL_N, MACD_SLOW): the closes kept
const WINDOW: usize = 60;

/// The value names, in the order the Python implementation fills its dict.
const VALUE_NAMES: [&str; 20] = [
    "ma5",
    "ma10",
    "ma20",
    "ma60",
    "boll_mid",
    "boll_upper",
    "boll_lower",
    "ema12",
    "ema26",
    "macd",
    "macd_signal",
    "macd_hist",
    "rsi6",
    "rsi12",
    "rsi24",
    "kdj_k",
    "kdj_d",
    "kdj_j",
    "vwap",
    "atr14",
];

/// VALUE_NAMES as Python strings, made once.
static VALUE_KEYS: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();

/// TA-Lib's PER_TO_K, as Python computes it: `2.0 / (p + 1)`.
fn k_of(period: usize) -> f64 {
    2.0 / (period + 1) as f64
}

fn not_zero(v: f64) -> bool {
    !(-TA_EPSILON < v && v < TA_EPSILON)
}

/// SMA of the last `period - 1` closes and `c`, summed oldest first (TA-Lib's seed).
fn mean_with(closes: &VecDeque<f64>, c: f64, period: usize) -> f64 {
    let mut total = 0.0;
    for x in closes.iter().skip(closes.len() - (period - 1)) {
        total += x;
    }
    (total + c) / period as f64
}

fn ema_step(
    prev: Option<f64>,
    c: f64,
    period: usize,
    n: usize,
    closes: &VecDeque<f64>,
) -> Option<f64> {
    match prev {
        Some(prev) => Some((c - prev) * k_of(period) + prev),
        None if n == period => Some(mean_with(closes, c, period)),
        None => None,
    }
}

/// One bar's fields the arithmetic reads.
struct BarIn {
    close: f64,
    high: f64,
    low: f64,
    volume: i64,
    amount: f64,
}

/// What a step changes, applied when it commits.
struct Next {
    values: [Option<f64>; 20],
    ma_sum: [f64; 4],
    ema: [Option<f64>; 2],
    macd_fast: Option<f64>,
    macd_slow: Option<f64>,
    signal_sum: f64,
    macd_signal: Option<f64>,
    rsi_gain: [f64; 3],
    rsi_loss: [f64; 3],
    kdj_k: f64,
    kdj_d: f64,
    tr_sum: f64,
    atr: Option<f64>,
    new_day: bool,
    day_amount: f64,
    day_volume: i64,
}

/// What the next bar of one series needs (schemas.indicators.IndicatorState).
#[pyclass(module = "hqstream_native")]
pub struct IndicatorState {
    bars: usize,
    closes: VecDeque<f64>,
    highs: VecDeque<f64>,
    lows: VecDeque<f64>,
    prev_close: f64,
    ma_sum: [f64; 4],
    ema: [Option<f64>; 2],
    macd_fast: Option<f64>,
    macd_slow: Option<f64>,
    signal_sum: f64,
    macd_signal: Option<f64>,
    rsi_gain: [f64; 3],
    rsi_loss: [f64; 3],
    kdj_k: f64,
    kdj_d: f64,
    tr_sum: f64,
    atr: Option<f64>,
    day: Py<PyString>,
    day_amount: f64,
    day_volume: i64,
}

impl IndicatorState {
    fn fresh(py: Python<'_>) -> Self {
        IndicatorState {
            bars: 0,
            closes: VecDeque::with_capacity(WINDOW),
            highs: VecDeque::with_capacity(KDJ_N - 1),
            lows: VecDeque::with_capacity(KDJ_N - 1),
            prev_close: 0.0,
            ma_sum: [0.0; 4],
            ema: [None; 2],
            macd_fast: None,
            macd_slow: None,
            signal_sum: 0.0,
            macd_signal: None,
            rsi_gain: [0.0; 3],
            rsi_loss: [0.0; 3],
            kdj_k: 50.0,
            kdj_d: 50.0,
            tr_sum: 0.0,
            atr: None,
            day: PyString::intern(py, "").unbind(),
            day_amount: 0.0,
            day_volume: 0,
        }
    }

    /// schemas.indicators.IndicatorState._step, without the commit.
    fn step(&self, bar: &BarIn, new_day: bool) -> Next {
        let (c, h, lo) = (bar.close, bar.high, bar.low);
        let n = self.bars + 1;
        let closes = &self.closes;
        let mut values: [Option<f64>; 20] = [None; 20];

        // moving averages and the BOLL deviation
        let mut ma_sum = [0.0; 4];
        let mut boll_mid = None;
        for (i, &period) in MA_PERIODS.iter().enumerate() {
            let mut total = self.ma_sum[i] + c;
            if n >= period {
                let mean = total / period as f64;
                values[i] = Some(mean);
                if period == BOLL_N {
                    boll_mid = Some(mean);
                }
                total -= closes[closes.len() - (period - 1)];
            }
            ma_sum[i] = total;
        }
        if let Some(mid) = boll_mid {
            let mut squares = (c - mid) * (c - mid);
            for x in closes.iter().skip(closes.len() - (BOLL_N - 1)) {
                let d = x - mid;
                squares += d * d;
            }
            let variance = squares / BOLL_N as f64;
            let spread = if variance >= TA_EPSILON {
                variance.sqrt()
            } else {
                0.0
            } * BOLL_K;
            values[4] = Some(mid);
            values[5] = Some(mid + spread);
            values[6] = Some(mid - spread);
        }

        // EMA
        let mut ema = [None; 2];
        for (i, &period) in EMA_PERIODS.iter().enumerate() {
            ema[i] = ema_step(self.ema[i], c, period, n, closes);
            values[7 + i] = ema[i];
        }

        // MACD
        let (mut fast, mut slow, mut signal, mut dif) = (None, None, None, None);
        let mut signal_sum = self.signal_sum;
        if n >= MACD_SLOW {
            let (f, s) = match (self.macd_fast, self.macd_slow) {
                (Some(pf), Some(ps)) => (
                    (c - pf) * k_of(MACD_FAST) + pf,
                    (c - ps) * k_of(MACD_SLOW) + ps,
                ),
                _ => (
                    mean_with(closes, c, MACD_FAST),
                    mean_with(closes, c, MACD_SLOW),
                ),
            };
            fast = Some(f);
            slow = Some(s);
            let d = f - s;
            dif = Some(d);
            let difs = n - MACD_SLOW + 1;
            match self.macd_signal {
                Some(prev) => signal = Some((d - prev) * k_of(MACD_SIGNAL) + prev),
                None => {
                    signal_sum += d;
                    if difs == MACD_SIGNAL {
                        signal = Some(signal_sum / MACD_SIGNAL as f64);
                    }
                }
            }
        }
        if let (Some(s), Some(d)) = (signal, dif) {
            values[9] = Some(d);
            values[10] = Some(s);
            values[11] = Some(d - s);
        }

        // RSI (Wilder)
        let (mut rsi_gain, mut rsi_loss) = (self.rsi_gain, self.rsi_loss);
        if n > 1 {
            let change = c - self.prev_close;
            for (i, &period) in RSI_PERIODS.iter().enumerate() {
                let (mut gain, mut loss) = (self.rsi_gain[i], self.rsi_loss[i]);
                let p = period as f64;
                if n - 1 <= period {
                    if change < 0.0 {
                        loss -= change;
                    } else {
                        gain += change;
                    }
                    if n - 1 == period {
                        gain /= p;
                        loss /= p;
                    }
                } else {
                    gain *= (period - 1) as f64;
                    loss *= (period - 1) as f64;
                    if change < 0.0 {
                        loss -= change;
                    } else {
                        gain += change;
                    }
                    gain /= p;
                    loss /= p;
                }
                rsi_gain[i] = gain;
                rsi_loss[i] = loss;
                if n > period {
                    // (n - 1 changes, at least `period` of them)
                    let total = gain + loss;
                    values[12 + i] = Some(if not_zero(total) {
                        100.0 * (gain / total)
                    } else {
                        0.0
                    });
                }
            }
        }

        // KDJ(9, 3, 3): Python's max(h, *highs) keeps the first of equal values
        let mut hhv = h;
        for &x in &self.highs {
            if x > hhv {
                hhv = x;
            }
        }
        let mut llv = lo;
        for &x in &self.lows {
            if x < llv {
                llv = x;
            }
        }
        let rng = hhv - llv;
        let rsv = if rng > 0.0 {
            (c - llv) / rng * 100.0
        } else {
            self.kdj_k
        };
        let k = (2.0 * self.kdj_k + rsv) / 3.0;
        let d = (2.0 * self.kdj_d + k) / 3.0;
        values[15] = Some(k);
        values[16] = Some(d);
        values[17] = Some(3.0 * k - 2.0 * d);

        // VWAP
        let (mut day_amount, mut day_volume) = (self.day_amount, self.day_volume);
        if new_day {
            day_amount = 0.0;
            day_volume = 0;
        }
        day_amount += bar.amount;
        day_volume += bar.volume;
        values[18] = (day_volume > 0).then(|| day_amount / day_volume as f64);

        // ATR
        let mut atr = self.atr;
        let mut tr_sum = self.tr_sum;
        if n > 1 {
            let pc = self.prev_close;
            let mut tr = h - lo;
            let up = (pc - h).abs();
            if up > tr {
                tr = up;
            }
            let down = (lo - pc).abs();
            if down > tr {
                tr = down;
            }
            match atr {
                Some(a) => atr = Some((a * (ATR_N - 1) as f64 + tr) / ATR_N as f64),
                None => {
                    tr_sum += tr;
                    if n - 1 == ATR_N {
                        atr = Some(tr_sum / ATR_N as f64);
                    }
                }
            }
        }
        values[19] = atr;

        Next {
            values,
            ma_sum,
            ema,
            macd_fast: fast,
            macd_slow: slow,
            signal_sum,
            macd_signal: signal,
            rsi_gain,
            rsi_loss,
            kdj_k: k,
            kdj_d: d,
            tr_sum,
            atr,
            new_day,
            day_amount,
            day_volume,
        }
    }

    fn run<'py>(
        &mut self,
        py: Python<'py>,
        bar: &Bound<'py, PyDict>,
        intraday: bool,
        commit: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let item = |name: &str| -> PyResult<Bound<'py, PyAny>> {
            bar.get_item(name)?
                .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(name.to_owned()))
        };
        let input = BarIn {
            close: item("close")?.extract()?,
            high: item("high")?.extract()?,
            low: item("low")?.extract()?,
            volume: item("volume")?.extract()?,
            amount: item("amount")?.extract()?,
        };
        let trade_date = item("trade_date")?;
        let new_day = !intraday || !trade_date.eq(self.day.bind(py))?;
        let next = self.step(&input, new_day);
        let values = PyDict::new(py);
        let keys = VALUE_KEYS.get_or_init(py, || {
            VALUE_NAMES
                .iter()
                .map(|name| PyString::intern(py, name).unbind())
                .collect()
        });
        for (key, value) in keys.iter().zip(next.values) {
            let key = key.bind(py);
            match value {
                Some(x) => values.set_item(key, PyFloat::new(py, x))?,
                None => values.set_item(key, py.None())?,
            }
        }
        if commit {
            self.bars += 1;
            push_bounded(&mut self.closes, input.close, WINDOW);
            push_bounded(&mut self.highs, input.high, KDJ_N - 1);
            push_bounded(&mut self.lows, input.low, KDJ_N - 1);
            self.prev_close = input.close;
            self.ma_sum = next.ma_sum;
            self.ema = next.ema;
            self.macd_fast = next.macd_fast;
            self.macd_slow = next.macd_slow;
            self.signal_sum = next.signal_sum;
            self.macd_signal = next.macd_signal;
            self.rsi_gain = next.rsi_gain;
            self.rsi_loss = next.rsi_loss;
            self.kdj_k = next.kdj_k;
            self.kdj_d = next.kdj_d;
            self.tr_sum = next.tr_sum;
            self.atr = next.atr;
            if next.new_day {
                self.day = trade_date.cast_into::<PyString>()?.unbind();
            }
            self.day_amount = next.day_amount;
            self.day_volume = next.day_volume;
        }
        Ok(values)
    }
}

fn push_bounded(window: &mut VecDeque<f64>, x: f64, cap: usize) {
    if window.len() == cap {
        window.pop_front();
    }
    window.push_back(x);
}

/// A double as JSON that orjson reads back to the same bits: prices in their
/// short fixed form (as orjson writes them), any other in Rust's shortest
/// round-trip form by Ryu (`1e16`, where orjson writes `1e+16`); null for
/// inf/nan, as orjson writes them.
fn put_float(out: &mut Vec<u8>, value: f64) {
    if !value.is_finite() {
        out.extend_from_slice(b"null");
    } else if !put_thousandths(out, value) {
        out.extend_from_slice(ryu::Buffer::new().format_finite(value).as_bytes());
    }
}

fn put_option(out: &mut Vec<u8>, value: Option<f64>) {
    match value {
        Some(x) => put_float(out, x),
        None => out.extend_from_slice(b"null"),
    }
}

fn put_floats(out: &mut Vec<u8>, values: impl Iterator<Item = Option<f64>>) {
    out.push(b'[');
    for (i, x) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_option(out, x);
    }
    out.push(b']');
}

fn window_from(data: &Bound<'_, PyDict>, name: &str, cap: usize) -> PyResult<VecDeque<f64>> {
    let values: Vec<f64> = required(data, name)?.extract()?;
    let skip = values.len().saturating_sub(cap);
    Ok(values[skip..].iter().copied().collect())
}

fn required<'py>(data: &Bound<'py, PyDict>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    data.get_item(name)?
        .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(name.to_owned()))
}

/// A fixed group (`ma_sum`, `ema`, `rsi_gain`, `rsi_loss`): exactly N values.
fn fixed<T, const N: usize>(data: &Bound<'_, PyDict>, name: &str) -> PyResult<[T; N]>
where
    T: for<'py> FromPyObjectOwned<'py>,
{
    let values: Vec<T> = required(data, name)?.extract()?;
    values
        .try_into()
        .map_err(|_| PyValueError::new_err(format!("{name}: {N} values expected")))
}

#[pymethods]
impl IndicatorState {
    #[new]
    fn new(py: Python<'_>) -> Self {
        IndicatorState::fresh(py)
    }

    /// Bars folded in.
    #[getter]
    fn bars(&self) -> usize {
        self.bars
    }

    /// Fold the final `bar` (open/high/low/close/volume/amount/trade_date) in.
    #[pyo3(signature = (bar, intraday=true))]
    fn close<'py>(
        &mut self,
        py: Python<'py>,
        bar: &Bound<'py, PyDict>,
        intraday: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        self.run(py, bar, intraday, true)
    }

    /// The values `bar` would have if it closed now; the state is unchanged.
    #[pyo3(signature = (bar, intraday=true))]
    fn peek<'py>(
        &mut self,
        py: Python<'py>,
        bar: &Bound<'py, PyDict>,
        intraday: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        self.run(py, bar, intraday, false)
    }

    /// The state as the Python implementation's `to_json` gives it (same keys, same order).
    fn to_json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (name, field) in self.fields() {
            match field {
                Field::Float(x) => out.set_item(name, x)?,
                Field::Maybe(x) => out.set_item(name, x)?,
                Field::Int(n) => out.set_item(name, n)?,
                Field::Window(xs) => out.set_item(name, xs.iter().copied().collect::<Vec<_>>())?,
                Field::Floats(xs) => out.set_item(name, PyTuple::new(py, xs.iter().copied())?)?,
                Field::Maybes(xs) => out.set_item(name, PyTuple::new(py, xs.iter().copied())?)?,
                Field::Day => out.set_item(name, self.day.bind(py))?,
            }
        }
        Ok(out)
    }

    /// `orjson.dumps(self.to_json())`: the same keys, numbers orjson reads back to the same bits.
    fn dumps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::with_capacity(1024);
        for (i, (name, field)) in self.fields().into_iter().enumerate() {
            out.push(if i == 0 { b'{' } else { b',' });
            out.push(b'"'); // the names are plain ASCII: nothing to escape
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            match field {
                Field::Float(x) => put_float(&mut out, x),
                Field::Maybe(x) => put_option(&mut out, x),
                Field::Int(n) => put_long(&mut out, n),
                Field::Window(xs) => put_floats(&mut out, xs.iter().copied().map(Some)),
                Field::Floats(xs) => put_floats(&mut out, xs.iter().copied().map(Some)),
                Field::Maybes(xs) => put_floats(&mut out, xs.iter().copied()),
                Field::Day => put_string(&mut out, self.day.bind(py).to_str()?),
            }
        }
        out.push(b'}');
        Ok(PyBytes::new(py, &out))
    }

    /// A state from `to_json`'s form (either implementation's, after a JSON round trip).
    #[staticmethod]
    fn from_json(data: &Bound<'_, PyDict>) -> PyResult<Self> {
        let bars: usize = required(data, "bars")?.extract()?;
        IndicatorState {
            bars,
            closes: window_from(data, "closes", WINDOW)?,
            highs: window_from(data, "highs", KDJ_N - 1)?,
            lows: window_from(data, "lows", KDJ_N - 1)?,
            prev_close: required(data, "prev_close")?.extract()?,
            ma_sum: fixed(data, "ma_sum")?,
            ema: fixed(data, "ema")?,
            macd_fast: required(data, "macd_fast")?.extract()?,
            macd_slow: required(data, "macd_slow")?.extract()?,
            signal_sum: required(data, "signal_sum")?.extract()?,
            macd_signal: required(data, "macd_signal")?.extract()?,
            rsi_gain: fixed(data, "rsi_gain")?,
            rsi_loss: fixed(data, "rsi_loss")?,
            kdj_k: required(data, "kdj_k")?.extract()?,
            kdj_d: required(data, "kdj_d")?.extract()?,
            tr_sum: required(data, "tr_sum")?.extract()?,
            atr: required(data, "atr")?.extract()?,
            day: required(data, "day")?.cast_into::<PyString>()?.unbind(),
            day_amount: required(data, "day_amount")?.extract()?,
            day_volume: required(data, "day_volume")?.extract()?,
        }
        .checked()
    }
}

/// One value of the stored state, as `to_json` and `dumps` write it.
enum Field<'a> {
    Float(f64),
    Maybe(Option<f64>),
    Int(i64),
    /// a window: a list
    Window(&'a VecDeque<f64>),
    /// a fixed group: a tuple (a JSON array)
    Floats(&'a [f64]),
    Maybes(&'a [Option<f64>]),
    Day,
}

impl IndicatorState {
    /// The stored state's fields, in the Python class's `__slots__` order.
    fn fields(&self) -> [(&'static str, Field<'_>); 20] {
        [
            ("atr", Field::Maybe(self.atr)),
            ("bars", Field::Int(self.bars as i64)),
            ("closes", Field::Window(&self.closes)),
            ("day", Field::Day),
            ("day_amount", Field::Float(self.day_amount)),
            ("day_volume", Field::Int(self.day_volume)),
            ("ema", Field::Maybes(&self.ema)),
            ("highs", Field::Window(&self.highs)),
            ("kdj_d", Field::Float(self.kdj_d)),
            ("kdj_k", Field::Float(self.kdj_k)),
            ("lows", Field::Window(&self.lows)),
            ("ma_sum", Field::Floats(&self.ma_sum)),
            ("macd_fast", Field::Maybe(self.macd_fast)),
            ("macd_signal", Field::Maybe(self.macd_signal)),
            ("macd_slow", Field::Maybe(self.macd_slow)),
            ("prev_close", Field::Float(self.prev_close)),
            ("rsi_gain", Field::Floats(&self.rsi_gain)),
            ("rsi_loss", Field::Floats(&self.rsi_loss)),
            ("signal_sum", Field::Float(self.signal_sum)),
            ("tr_sum", Field::Float(self.tr_sum)),
        ]
    }

    /// A restored state whose windows fit its bar count (else the arithmetic would index past them).
    fn checked(self) -> PyResult<Self> {
        let expected = self.bars.min(WINDOW);
        let kdj = self.bars.min(KDJ_N - 1);
        if self.closes.len() != expected || self.highs.len() != kdj || self.lows.len() != kdj {
            return Err(PyValueError::new_err(format!(
                "a state of {} bars holds {} closes, {} highs, {} lows",
                self.bars,
                self.closes.len(),
                self.highs.len(),
                self.lows.len()
            )));
        }
        Ok(self)
    }
}
