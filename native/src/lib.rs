//! hqstream_native: the stream workers' compiled fast path for one feed
//! line (a Shanghai/Shenzhen `$` line or a Beijing JSON object) -> (Quote
//! dict, Avro single-object bytes, the JSON Redis stores).
//!
//! It reproduces streams.parse.parse_record + streams.normalize.build_quote +
//! the quote codec's encoder exactly, for the lines it can prove good, and
//! answers None for every other line (anything unusual or bad):
//! the caller then takes the Python path, which names the bad record's
//! reason. The market rules stay in Python: board by code, ST and
//! new-listing names, limit prices, dates, times and session phases are asked
//! of the Python functions passed in, once per distinct value, and cached.
//! A Beijing line's JSON is read by orjson (the Python path's reader, so both
//! see the same values); only the checks of its values are compiled.
//! Never raises for a line; never does I/O.

mod alerts;
mod arbiter;
mod avro;
mod candles;
mod indicators;
mod line;
mod market_stats;
mod pyround;
mod quote_dict;
mod quote_json;
mod record_encoder;
mod redis_rows;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};
use rustc_hash::FxHashMap;

use line::{Bounds, Numbers, BOOK_LEVELS};

/// The Quote's fields (quote.v2.avsc) in order, with their Avro types as
/// `type`, `enum:SYMBOLS` or `array:ITEMS`: the dict's keys and the encoder's
/// layout. Python compares this with the schema and keeps its own path when
/// they differ, so a schema change cannot silently get old bytes.
const QUOTE_FIELDS: [(&str, &str); 37] = [
    ("symbol", "string"),
    ("code", "string"),
    ("market", "enum:SH,SZ,BJ"),
    ("board", "enum:MAIN,STAR,CHINEXT,BJ"),
    ("name", "string"),
    ("is_st", "boolean"),
    ("exchange_ts", "long"),
    ("trade_date", "string"),
    ("open", "double"),
    ("prev_close", "double"),
    ("price", "double"),
    ("high", "double"),
    ("low", "double"),
    ("bid", "double"),
    ("ask", "double"),
    ("volume", "long"),
    ("amount", "double"),
    ("bid_prices", "array:double"),
    ("bid_volumes", "array:long"),
    ("ask_prices", "array:double"),
    ("ask_volumes", "array:long"),
    ("change", "double"),
    ("change_pct", "double"),
    ("limit_up", "double"),
    ("limit_down", "double"),
    ("traded", "boolean"),
    ("suspended", "boolean"),
    ("at_limit_up", "boolean"),
    ("at_limit_down", "boolean"),
    ("receive_ts", "long"),
    ("process_ts", "long"),
    ("limit_free", "boolean"),
    ("not_traded_yet", "boolean"),
    ("phase", "string"),
    ("avg_price", "double"),
    ("amplitude", "double"),
    ("order_imbalance", "double"),
];
/// Symbols of the Market and Board enums, in schema order (their Avro index).
const MARKETS: [&str; 3] = ["SH", "SZ", "BJ"];
const BOARDS: [&str; 4] = ["MAIN", "STAR", "CHINEXT", "BJ"];
/// A cache holding more entries than this is cleared, with every other (bounded memory).
const CACHE_MAX: usize = 65_536;
/// The keys of a Beijing JSON quote (streams.parse's), in the order of the `JSON_*` indices.
const JSON_KEYS: [&str; 14] = [
    "symbol",
    "name",
    "timestamp",
    "lastPrice",
    "preClose",
    "open",
    "high",
    "low",
    "turnover",
    "volume",
    "bidPrices",
    "bidVolumes",
    "askPrices",
    "askVolumes",
];
const JSON_SYMBOL: usize = 0;
const JSON_NAME: usize = 1;
const JSON_TIMESTAMP: usize = 2;
const JSON_SCALARS: usize = 3; // lastPrice, preClose, open, high, low, turnover
const JSON_VOLUME: usize = 9;
const JSON_BOOK: usize = 10; // bidPrices, bidVolumes, askPrices, askVolumes
/// A Beijing quote's time of day in the clock cache: ms since midnight with the
/// top bit set (a `HH:MM:SS` key is 8 ASCII bytes, whose top bit is clear).
const JSON_CLOCK: u64 = 1 << 63;

/// A symbol on a known board.
struct Symbol {
    symbol: Py<PyString>,
    code: Py<PyString>,
    market: Py<PyString>,
    board: Py<PyString>,
    market_index: i64,
    board_index: u8,
}

/// A name as the feed sends it, stripped as Python strips it.
struct Name {
    text: Py<PyString>,
    utf8: Box<[u8]>,
    st: bool,
}

/// A trade date `YYYY-MM-DD` and its local midnight.
struct Day {
    text: Py<PyString>,
    utf8: [u8; 10],
    midnight_ms: i64,
}

/// A time of day `HH:MM:SS` and its session phase.
struct Clock {
    ms: i64,
    phase: Py<PyString>,
    phase_utf8: Box<[u8]>,
}

/// streams.normalize.limits: (limit_up, limit_down, limit_up_cents, limit_down_cents).
type Limits = (f64, f64, i64, i64);

/// The Python functions that hold the market rules (streams.normalize's, by name).
struct Rules {
    board_or_none: Py<PyAny>,
    name_is_st: Py<PyAny>,
    name_is_limit_free: Py<PyAny>,
    limits: Py<PyAny>,
    local_midnight_ms: Py<PyAny>,
    local_date_and_time: Py<PyAny>,
    time_of_day_ms: Py<PyAny>,
    phase_of: Py<PyAny>,
    /// orjson.loads: Beijing lines are read as the Python path reads them
    loads: Py<PyAny>,
}

/// Parses Shanghai/Shenzhen lines into Quote dicts and their Avro bytes.
#[pyclass(module = "hqstream_native")]
struct QuoteParser {
    header: Vec<u8>,
    rules: Rules,
    bounds: Bounds,
    opening_ms: i64,
    closing_ms: i64,
    /// streams.normalize's (schemas.exchange's) SHANGHAI_OFFSET_MS and DAY_MS
    offset_ms: i64,
    day_ms: i64,
    keys: Vec<Py<PyString>>,
    /// every key of `keys` (to None), in order: a quote's dict is a copy of it, made at
    /// its full size at once (a new dict grows through three resizes to 37 keys)
    template: Py<PyDict>,
    json_keys: Vec<Py<PyString>>,
    symbols: FxHashMap<u64, Symbol>,
    name_ids: FxHashMap<Box<[u8]>, u32>,
    names: Vec<Name>,
    day_ids: FxHashMap<[u8; 10], u32>,
    days: Vec<Day>,
    /// a Beijing timestamp's local day (days since the epoch) -> its id in `days`
    json_days: FxHashMap<i64, u32>,
    clocks: FxHashMap<u64, Clock>,
    /// each feed's `source` header value and its str
    sources: FxHashMap<Box<[u8]>, Py<PyString>>,
    limits: FxHashMap<(u64, u8, bool, u32), Limits>,
    limit_free: FxHashMap<(u32, u8, u32), bool>,
    scratch: String,
}

/// `QuoteParser.parse`'s answer: the Quote dict, its Avro, its JSON.
type Full<'py> = (Bound<'py, PyDict>, Bound<'py, PyBytes>, Bound<'py, PyBytes>);
/// `QuoteParser.parse_avro`'s answer: code, exchange_ts, price, volume, Avro.
type AvroHead<'py> = (Bound<'py, PyString>, i64, f64, i64, Bound<'py, PyBytes>);

/// What a line needs from the caches, by id.
struct Looked {
    symbol: u64,
    name: u32,
    day: u32,
    clock: u64,
    limits: Limits,
    limit_free: bool,
}

/// One line's quote, everything known: what the dict and the Avro are made of.
struct Quote {
    n: Numbers,
    found: Looked,
    d: Derived,
    exchange_ts: i64,
    receive_ts: i64,
    process_ts: i64,
}

/// What build_quote derives from the values.
struct Derived {
    change: f64,
    change_pct: f64,
    limit_up: f64,
    limit_down: f64,
    traded: bool,
    suspended: bool,
    at_limit_up: bool,
    at_limit_down: bool,
    not_traded_yet: bool,
    avg_price: f64,
    amplitude: f64,
    order_imbalance: f64,
}

fn key_of(bytes: &[u8]) -> u64 {
    let mut key = [0u8; 8];
    key.copy_from_slice(bytes);
    u64::from_le_bytes(key)
}

#[pymethods]
impl QuoteParser {
    /// `header`: what every Avro payload starts with (the quote codec's);
    /// `rules`: streams.normalize (the functions above, OPENING_MS, CLOSING_MS);
    /// `bounds`: streams.parse (MAX_PRICE, MIN_PREV_CLOSE, MAX_VOLUME, MAX_AMOUNT).
    #[new]
    fn new(
        py: Python<'_>,
        header: Vec<u8>,
        rules: &Bound<'_, PyAny>,
        bounds: &Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let function = |name: &str| rules.getattr(name).map(Bound::unbind);
        let (keys, template) = quote_keys(py)?;
        let json_keys = JSON_KEYS
            .iter()
            .map(|name| PyString::intern(py, name).unbind())
            .collect();
        Ok(QuoteParser {
            header,
            rules: Rules {
                board_or_none: function("board_or_none")?,
                name_is_st: function("name_is_st")?,
                name_is_limit_free: function("name_is_limit_free")?,
                limits: function("limits")?,
                local_midnight_ms: function("local_midnight_ms")?,
                local_date_and_time: function("local_date_and_time")?,
                time_of_day_ms: function("time_of_day_ms")?,
                phase_of: function("phase_of")?,
                loads: py.import("orjson")?.getattr("loads")?.unbind(),
            },
            bounds: Bounds {
                max_price: bounds.getattr("MAX_PRICE")?.extract()?,
                min_prev_close: bounds.getattr("MIN_PREV_CLOSE")?.extract()?,
                max_volume: bounds.getattr("MAX_VOLUME")?.extract()?,
                max_amount: bounds.getattr("MAX_AMOUNT")?.extract()?,
            },
            opening_ms: rules.getattr("OPENING_MS")?.extract()?,
            closing_ms: rules.getattr("CLOSING_MS")?.extract()?,
            offset_ms: rules.getattr("SHANGHAI_OFFSET_MS")?.extract()?,
            day_ms: rules.getattr("DAY_MS")?.extract()?,
            keys,
            template,
            json_keys,
            symbols: FxHashMap::default(),
            name_ids: FxHashMap::default(),
            names: Vec::new(),
            day_ids: FxHashMap::default(),
            days: Vec::new(),
            json_days: FxHashMap::default(),
            clocks: FxHashMap::default(),
            sources: FxHashMap::default(),
            limits: FxHashMap::default(),
            limit_free: FxHashMap::default(),
            scratch: String::new(),
        })
    }

    /// `(quote, avro, json)` of one raw line, exactly as the Python path makes
    /// them (the JSON: `orjson.dumps(quote)`, as Redis stores it), or None when
    /// the line is not a plain, good Shanghai/Shenzhen quote.
    #[pyo3(signature = (raw, receive_ts, process_ts, max_ahead_ms=None))]
    fn parse<'py>(
        &mut self,
        py: Python<'py>,
        raw: &Bound<'py, PyAny>,
        receive_ts: &Bound<'py, PyAny>,
        process_ts: &Bound<'py, PyAny>,
        max_ahead_ms: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Full<'py>>> {
        let Some(q) = self.read(py, raw, receive_ts, process_ts, max_ahead_ms) else {
            return Ok(None);
        };
        let avro = self.avro(&q);
        // the JSON of the Avro just written: the gateway's writer, the same bytes
        // as orjson.dumps of the dict (both follow the schema's field order)
        let Some(json) = quote_json::quote_json(&self.header, &avro) else {
            return Ok(None);
        };
        Ok(Some((
            self.quote_dict(py, &q)?,
            PyBytes::new(py, &avro),
            PyBytes::new(py, &json.json),
        )))
    }

    /// `(code, exchange_ts, price, volume, avro)` of one raw line: the Avro
    /// of `parse`, and what the feed arbiter needs, without the dict and the
    /// JSON (half the time a line takes here: `QuoteMaker` makes them from the
    /// Avro later, off a burst's path); None for a line `parse` refuses, but a
    /// line whose JSON it leaves to Python (a double whose shortest form it does
    /// not prove orjson's) is read here: its dict and JSON are then made by the
    /// codec's decode and orjson.
    #[pyo3(signature = (raw, receive_ts, process_ts, max_ahead_ms=None))]
    fn parse_avro<'py>(
        &mut self,
        py: Python<'py>,
        raw: &Bound<'py, PyAny>,
        receive_ts: &Bound<'py, PyAny>,
        process_ts: &Bound<'py, PyAny>,
        max_ahead_ms: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<AvroHead<'py>>> {
        let Some(q) = self.read(py, raw, receive_ts, process_ts, max_ahead_ms) else {
            return Ok(None);
        };
        let avro = self.avro(&q);
        let code = self.symbols[&q.found.symbol].code.bind(py).clone();
        Ok(Some((
            code,
            q.exchange_ts,
            q.n.price,
            q.n.volume,
            PyBytes::new(py, &avro),
        )))
    }

    /// `streams.pipeline.Processor.parse` of `records[start:]` (its compiled path:
    /// each quote's Avro only) with the feed arbiter's `judge` compiled, until a
    /// record this does not take as it is (a line `parse_avro` refuses, a header
    /// that is not plain): returns `(its index, copies the arbiter dropped)`, the
    /// index `len(records)` when none is left. Each published quote's Avro, code,
    /// raw partition and record are appended to `encoded`, `codes`, `partitions`
    /// and `sources`. `feed_headers`: the names of the `receive_ts` and `source`
    /// headers and the source of a record without one
    /// (`streams.pipeline.receive_ts_and_source`).
    #[pyo3(signature = (records, start, process_ts, max_ahead_ms, arbiter, feed_headers, encoded, codes, partitions, sources))]
    #[allow(clippy::too_many_arguments)]
    fn parse_run<'py>(
        &mut self,
        py: Python<'py>,
        records: &Bound<'py, PyList>,
        start: usize,
        process_ts: i64,
        max_ahead_ms: Option<i64>,
        arbiter: &Bound<'py, PyAny>,
        feed_headers: (
            Bound<'py, PyString>,
            Bound<'py, PyString>,
            Bound<'py, PyString>,
        ),
        encoded: &Bound<'py, PyList>,
        codes: &Bound<'py, PyList>,
        partitions: &Bound<'py, PyList>,
        sources: &Bound<'py, PyList>,
    ) -> PyResult<(usize, usize)> {
        let Ok(arbiter) = arbiter::Arbiter::of(arbiter) else {
            return Ok((start, 0)); // not shaped as expected: the Python path judges
        };
        let headers = (&feed_headers.0, &feed_headers.1, &feed_headers.2);
        let outputs = (encoded, codes, partitions, sources);
        let mut arbitrated = 0;
        for index in start..records.len() {
            // a record this cannot take, or any error (which the Python path then
            // meets itself, and dead-letters the record with): the Python path's
            match self.run_one(
                py,
                &records.get_item(index)?,
                process_ts,
                max_ahead_ms,
                &arbiter,
                headers,
                outputs,
            ) {
                Ok(Some(published)) => arbitrated += usize::from(!published),
                Ok(None) | Err(_) => return Ok((index, arbitrated)),
            }
        }
        Ok((records.len(), arbitrated))
    }
}

/// The Quote's keys (interned) and a dict of them all to None, in the schema's order:
/// a quote's dict is a copy of it, made at its full size at once (a new dict grows
/// through three resizes to 37 keys).
pub(crate) fn quote_keys(py: Python<'_>) -> PyResult<(Vec<Py<PyString>>, Py<PyDict>)> {
    let keys: Vec<Py<PyString>> = QUOTE_FIELDS
        .iter()
        .map(|(name, _)| PyString::intern(py, name).unbind())
        .collect();
    let template = PyDict::new(py);
    for key in &keys {
        template.set_item(key.bind(py), py.None())?;
    }
    Ok((keys, template.unbind()))
}

/// `value` as bytes, only when it is exactly a `bytes` object.
fn exact_bytes<'a, 'py>(value: &'a Bound<'py, PyAny>) -> Option<&'a Bound<'py, PyBytes>> {
    value.cast_exact::<PyBytes>().ok()
}

/// `value` as an i64, only when it is exactly an `int` (not a bool) that fits.
pub(crate) fn exact_int(value: &Bound<'_, PyAny>) -> Option<i64> {
    if !value.is_exact_instance_of::<PyInt>() {
        return None;
    }
    value.extract().ok()
}

/// Ints up to this convert to the same double in Python and here, exactly.
const EXACT_INT_MAX: i64 = 1 << 53;

/// streams.parse._number: an exact `float` or `int`, not negative, as a float;
/// None also for -0.0 and ints beyond 2**53 (the Python path takes those).
fn json_number(value: &Bound<'_, PyAny>) -> Option<f64> {
    if value.is_exact_instance_of::<PyFloat>() {
        let x: f64 = value.extract().ok()?;
        return (x.is_finite() && x.is_sign_positive()).then_some(x);
    }
    let i = exact_int(value)?;
    (0..=EXACT_INT_MAX).contains(&i).then_some(i as f64)
}

/// streams.parse._whole: an exact `int`, or a `float` with no fraction, in [0, max).
fn json_whole(value: &Bound<'_, PyAny>, max: i64) -> Option<i64> {
    let whole = if value.is_exact_instance_of::<PyFloat>() {
        let x: f64 = value.extract().ok()?;
        if !(x.is_finite() && x.fract() == 0.0 && x >= 0.0 && x < max as f64) {
            return None;
        }
        x as i64
    } else {
        exact_int(value)?
    };
    (0..max).contains(&whole).then_some(whole)
}

/// An exact list of BOOK_LEVELS items, each read by `item`.
fn json_book<T: Copy + Default>(
    value: &Bound<'_, PyAny>,
    item: impl Fn(&Bound<'_, PyAny>) -> Option<T>,
) -> Option<[T; BOOK_LEVELS]> {
    let list = value.cast_exact::<PyList>().ok()?;
    if list.len() != BOOK_LEVELS {
        return None;
    }
    let mut out = [T::default(); BOOK_LEVELS];
    for (slot, v) in out.iter_mut().zip(list.iter()) {
        *slot = item(&v)?;
    }
    Some(out)
}

/// streams.parse._book of prices: numbers up to `max_price`.
fn json_prices(value: &Bound<'_, PyAny>, max_price: f64) -> Option<[f64; BOOK_LEVELS]> {
    json_book(value, |v| json_number(v).filter(|&p| p <= max_price))
}

/// streams.parse._book of volumes: whole numbers below `max_volume`.
fn json_volumes(value: &Bound<'_, PyAny>, max_volume: i64) -> Option<[i64; BOOK_LEVELS]> {
    json_book(value, |v| json_whole(v, max_volume))
}

/// A raw record's line, `receive_ts`, source and partition (`RecordHead`).
type RecordHead<'py> = (
    Bound<'py, PyBytes>,
    i64,
    Bound<'py, PyString>,
    Bound<'py, PyInt>,
);

impl QuoteParser {
    /// A `streams.pipeline.RawRecord`'s line, `receive_ts` and source (as
    /// `receive_ts_and_source` reads its headers: the last of each name counts) and
    /// partition; None when any of them is not plain (a `receive_ts` that is not
    /// ASCII digits, a source that is not UTF-8, a value of another type): the
    /// Python path reads that record.
    fn record_head<'py>(
        &mut self,
        rec: &Bound<'py, PyAny>,
        receive_ts_name: &Bound<'py, PyString>,
        source_name: &Bound<'py, PyString>,
        implicit_source: &Bound<'py, PyString>,
    ) -> PyResult<Option<RecordHead<'py>>> {
        let py = rec.py();
        let Ok(value) = rec
            .getattr(intern!(py, "value"))?
            .cast_into_exact::<PyBytes>()
        else {
            return Ok(None);
        };
        let Ok(partition) = rec
            .getattr(intern!(py, "partition"))?
            .cast_into_exact::<PyInt>()
        else {
            return Ok(None);
        };
        let Some(mut receive_ts) = exact_int(&rec.getattr(intern!(py, "timestamp_ms"))?) else {
            return Ok(None);
        };
        let mut source = implicit_source.clone();
        for header in rec.getattr(intern!(py, "headers"))?.try_iter()? {
            let header = header?;
            let Ok(pair) = header.cast::<pyo3::types::PyTuple>() else {
                return Ok(None);
            };
            if pair.len() != 2 {
                return Ok(None);
            }
            let (name, value) = (pair.get_item(0)?, pair.get_item(1)?);
            let Ok(value) = value.cast_exact::<PyBytes>() else {
                return Ok(None);
            };
            if name.eq(receive_ts_name)? {
                match line::plain_int(std::str::from_utf8(value.as_bytes()).unwrap_or("")) {
                    Some(ts) => receive_ts = ts,
                    None => return Ok(None),
                }
            } else if name.eq(source_name)? {
                match self.source(py, value.as_bytes()) {
                    Some(found) => source = found,
                    None => return Ok(None),
                }
            }
        }
        Ok(Some((value, receive_ts, source, partition)))
    }

    /// `parse_run` of one record: Some(whether it was published), None when the
    /// Python path must read it.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn run_one<'py>(
        &mut self,
        py: Python<'py>,
        rec: &Bound<'py, PyAny>,
        process_ts: i64,
        max_ahead_ms: Option<i64>,
        arbiter: &arbiter::Arbiter<'py>,
        headers: (
            &Bound<'py, PyString>,
            &Bound<'py, PyString>,
            &Bound<'py, PyString>,
        ),
        outputs: (
            &Bound<'py, PyList>,
            &Bound<'py, PyList>,
            &Bound<'py, PyList>,
            &Bound<'py, PyList>,
        ),
    ) -> PyResult<Option<bool>> {
        let Some((value, receive_ts, source, partition)) =
            self.record_head(rec, headers.0, headers.1, headers.2)?
        else {
            return Ok(None);
        };
        let Some(q) = self.read_line(py, &value, receive_ts, process_ts, max_ahead_ms) else {
            return Ok(None);
        };
        let code = self.symbols[&q.found.symbol].code.bind(py).clone();
        if arbiter.judge(
            &code,
            q.exchange_ts,
            &source,
            &partition,
            q.n.price,
            q.n.volume,
        )? {
            return Ok(Some(false));
        }
        let (encoded, codes, partitions, sources) = outputs;
        encoded.append(PyBytes::new(py, &self.avro(&q)))?;
        codes.append(code)?;
        partitions.append(partition)?;
        sources.append(rec)?;
        Ok(Some(true))
    }

    /// The str of a `source` header's UTF-8 bytes, made once (None: not UTF-8).
    fn source<'py>(&mut self, py: Python<'py>, bytes: &[u8]) -> Option<Bound<'py, PyString>> {
        if let Some(found) = self.sources.get(bytes) {
            return Some(found.bind(py).clone());
        }
        let text = PyString::new(py, std::str::from_utf8(bytes).ok()?);
        if self.sources.len() >= CACHE_MAX {
            self.sources.clear();
        }
        self.sources.insert(bytes.into(), text.clone().unbind());
        Some(text)
    }

    /// One raw line's quote, everything known; None when the line is not a plain,
    /// good quote (or an argument is not of its exact type): the Python path decides.
    fn read(
        &mut self,
        py: Python<'_>,
        raw: &Bound<'_, PyAny>,
        receive_ts: &Bound<'_, PyAny>,
        process_ts: &Bound<'_, PyAny>,
        max_ahead_ms: Option<&Bound<'_, PyAny>>,
    ) -> Option<Quote> {
        let (Some(raw), Some(receive_ts), Some(process_ts)) = (
            exact_bytes(raw),
            exact_int(receive_ts),
            exact_int(process_ts),
        ) else {
            return None;
        };
        let max_ahead_ms = match max_ahead_ms {
            None => None,
            Some(value) if value.is_none() => None,
            Some(value) => Some(exact_int(value)?),
        };
        self.read_line(py, raw, receive_ts, process_ts, max_ahead_ms)
    }

    /// `read` of values already checked.
    fn read_line(
        &mut self,
        py: Python<'_>,
        raw: &Bound<'_, PyBytes>,
        receive_ts: i64,
        process_ts: i64,
        max_ahead_ms: Option<i64>,
    ) -> Option<Quote> {
        let mut line = raw.as_bytes();
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        let read = if line.first() == Some(&b'{') {
            let text = if line.len() == raw.as_bytes().len() {
                raw.clone()
            } else {
                PyBytes::new(py, line)
            };
            self.json_line(py, &text)
        } else {
            self.dollar_line(py, line)
        };
        let (n, found, exchange_ts) = read?;
        if let Some(max_ahead) = max_ahead_ms {
            let since = if receive_ts > 0 {
                receive_ts
            } else {
                process_ts
            };
            if i128::from(exchange_ts) - i128::from(since) > i128::from(max_ahead) {
                return None;
            }
        }
        let d = self.derive(&n, &found)?;
        Some(Quote {
            n,
            found,
            d,
            exchange_ts,
            receive_ts,
            process_ts,
        })
    }

    /// A Shanghai/Shenzhen `$` line's numbers, facts and exchange time, when
    /// the Python path would take it as they are.
    fn dollar_line(&mut self, py: Python<'_>, line: &[u8]) -> Option<(Numbers, Looked, i64)> {
        let text = std::str::from_utf8(line).ok()?;
        let fields = line::split_fields(text)?;
        let n = line::numbers(&fields, &self.bounds)?;
        self.bound_caches();
        let symbol = self.symbol(py, fields[0], false)?;
        let name = self.name(py, fields[1])?;
        let day = self.day(py, fields[31])?;
        let clock = self.clock(py, fields[32])?;
        let found = self.look_up(py, symbol, name, day, clock, n.prev_close)?;
        let exchange_ts = self.days[day as usize].midnight_ms + self.clocks[&clock].ms;
        Some((n, found, exchange_ts))
    }

    /// A Beijing JSON line (streams.parse._parse_bse_json): read by orjson,
    /// every value checked as the Python path checks it; None for anything
    /// it would refuse or read another way (a -0.0 price, an int beyond 2**53).
    fn json_line(
        &mut self,
        py: Python<'_>,
        text: &Bound<'_, PyBytes>,
    ) -> Option<(Numbers, Looked, i64)> {
        let obj = self.rules.loads.bind(py).call1((text,)).ok()?;
        let obj = obj.cast_exact::<PyDict>().ok()?;
        let mut values = Vec::with_capacity(JSON_KEYS.len());
        for key in &self.json_keys {
            values.push(obj.get_item(key.bind(py)).ok()??);
        }
        let symbol = values[JSON_SYMBOL]
            .cast_exact::<PyString>()
            .ok()?
            .to_str()
            .ok()?;
        let name = values[JSON_NAME]
            .cast_exact::<PyString>()
            .ok()?
            .to_str()
            .ok()?;
        let timestamp = exact_int(&values[JSON_TIMESTAMP])?;
        let mut scalars = [0.0; 6];
        for (slot, value) in scalars.iter_mut().zip(&values[JSON_SCALARS..JSON_VOLUME]) {
            *slot = json_number(value)?;
        }
        let [price, prev_close, open, high, low, amount] = scalars;
        let b = self.bounds;
        let volume = json_whole(&values[JSON_VOLUME], b.max_volume)?;
        let book = &values[JSON_BOOK..];
        let bid_prices = json_prices(&book[0], b.max_price)?;
        let bid_volumes = json_volumes(&book[1], b.max_volume)?;
        let ask_prices = json_prices(&book[2], b.max_price)?;
        let ask_volumes = json_volumes(&book[3], b.max_volume)?;
        let top = [price, prev_close, open, high, low]
            .into_iter()
            .fold(0.0, f64::max);
        if top > b.max_price || amount >= b.max_amount || timestamp <= 0 {
            return None;
        }
        if 0.0 < prev_close && prev_close < b.min_prev_close {
            return None;
        }
        if high < low && high != 0.0 {
            return None;
        }
        let n = Numbers {
            open,
            prev_close,
            price,
            high,
            low,
            bid: bid_prices[0],
            ask: ask_prices[0],
            volume,
            amount,
            bid_prices,
            bid_volumes,
            ask_prices,
            ask_volumes,
        };
        self.bound_caches();
        let symbol = self.symbol(py, symbol, true)?;
        let name = self.name(py, name)?;
        let (day, clock) = self.day_and_clock(py, timestamp)?;
        let found = self.look_up(py, symbol, name, day, clock, n.prev_close)?;
        Some((n, found, timestamp))
    }

    /// The local day and time of day of an epoch-ms instant
    /// (streams.normalize.local_date_and_time), as cache ids.
    fn day_and_clock(&mut self, py: Python<'_>, epoch_ms: i64) -> Option<(u32, u64)> {
        let local = epoch_ms.checked_add(self.offset_ms)?;
        let (index, ms) = (local.div_euclid(self.day_ms), local.rem_euclid(self.day_ms));
        let day = match self.json_days.get(&index) {
            Some(&id) => id,
            None => {
                let answer = self
                    .rules
                    .local_date_and_time
                    .bind(py)
                    .call1((epoch_ms,))
                    .ok()?;
                let (date, time_of_day): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
                    answer.extract().ok()?;
                let date = date
                    .cast_exact::<PyString>()
                    .ok()?
                    .to_str()
                    .ok()?
                    .to_owned();
                if exact_int(&time_of_day)? != ms {
                    return None;
                }
                let id = self.day(py, &date)?;
                if self.days[id as usize].midnight_ms.checked_add(ms)? != epoch_ms {
                    return None;
                }
                self.json_days.insert(index, id);
                id
            }
        };
        let key = JSON_CLOCK | ms as u64;
        if !self.clocks.contains_key(&key) {
            self.add_clock(py, key, ms)?;
        }
        Some((day, key))
    }

    /// Clears every cache when one has grown beyond CACHE_MAX (ids are per generation).
    fn bound_caches(&mut self) {
        let largest = [
            self.symbols.len(),
            self.names.len(),
            self.days.len(),
            self.clocks.len(),
            self.limits.len(),
            self.limit_free.len(),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        if largest >= CACHE_MAX {
            self.symbols.clear();
            self.name_ids.clear();
            self.names.clear();
            self.day_ids.clear();
            self.days.clear();
            self.json_days.clear();
            self.clocks.clear();
            self.limits.clear();
            self.limit_free.clear();
        }
    }

    /// Everything the rules say about a line's symbol, name, day and prev_close;
    /// None when one of them refuses it (or a rule raised: the Python path then says why).
    fn look_up(
        &mut self,
        py: Python<'_>,
        symbol: u64,
        name: u32,
        day: u32,
        clock: u64,
        prev_close: f64,
    ) -> Option<Looked> {
        let board_index = self.symbols[&symbol].board_index;
        let st = self.names[name as usize].st;
        let limits = match self
            .limits
            .get(&(prev_close.to_bits(), board_index, st, day))
        {
            Some(&limits) => limits,
            None => {
                let board = self.symbols[&symbol].board.bind(py);
                let date = self.days[day as usize].text.bind(py);
                let limits: Limits = self
                    .rules
                    .limits
                    .bind(py)
                    .call1((prev_close, board, st, date))
                    .ok()?
                    .extract()
                    .ok()?;
                self.limits
                    .insert((prev_close.to_bits(), board_index, st, day), limits);
                limits
            }
        };
        let limit_free = match self.limit_free.get(&(name, board_index, day)) {
            Some(&free) => free,
            None => {
                let text = self.names[name as usize].text.bind(py);
                let board = self.symbols[&symbol].board.bind(py);
                let date = self.days[day as usize].text.bind(py);
                let free = exact_bool(
                    &self
                        .rules
                        .name_is_limit_free
                        .bind(py)
                        .call1((text, board, date))
                        .ok()?,
                )?;
                self.limit_free.insert((name, board_index, day), free);
                free
            }
        };
        Some(Looked {
            symbol,
            name,
            day,
            clock,
            limits,
            limit_free,
        })
    }

    /// `sh`/`sz` (`bj` for a JSON line) + 6 ASCII digits on a known board: its cache key.
    fn symbol(&mut self, py: Python<'_>, text: &str, json: bool) -> Option<u64> {
        let bytes = text.as_bytes();
        if bytes.len() != 8 || !bytes[2..].iter().all(u8::is_ascii_digit) {
            return None;
        }
        if (&bytes[..2] == b"bj") != json {
            return None; // Beijing's symbols come in JSON, the others in `$` lines
        }
        let key = key_of(bytes);
        if self.symbols.contains_key(&key) {
            return Some(key);
        }
        let market = match &bytes[..2] {
            b"sh" => "SH",
            b"sz" => "SZ",
            b"bj" => "BJ",
            _ => return None,
        };
        let code = PyString::new(py, &text[2..]);
        let board = self
            .rules
            .board_or_none
            .bind(py)
            .call1((market, &code))
            .ok()?;
        let board = board.cast_exact::<PyString>().ok()?.clone();
        let board_index = BOARDS
            .iter()
            .position(|b| board.to_str().ok() == Some(*b))?;
        let market_index = MARKETS.iter().position(|m| *m == market)?;
        self.symbols.insert(
            key,
            Symbol {
                symbol: PyString::new(py, text).unbind(),
                code: code.unbind(),
                market: PyString::intern(py, market).unbind(),
                board: board.unbind(),
                market_index: market_index as i64,
                board_index: board_index as u8,
            },
        );
        Some(key)
    }

    /// The name as Python's `str.strip` leaves it, and whether it is ST.
    fn name(&mut self, py: Python<'_>, raw: &str) -> Option<u32> {
        if let Some(&id) = self.name_ids.get(raw.as_bytes()) {
            return Some(id);
        }
        let stripped = PyString::new(py, raw).call_method0("strip").ok()?;
        let stripped = stripped.cast_exact::<PyString>().ok()?.clone();
        let st = exact_bool(&self.rules.name_is_st.bind(py).call1((&stripped,)).ok()?)?;
        let utf8: Box<[u8]> = stripped.to_str().ok()?.as_bytes().into();
        let id = self.names.len() as u32;
        self.names.push(Name {
            text: stripped.unbind(),
            utf8,
            st,
        });
        self.name_ids.insert(raw.as_bytes().into(), id);
        Some(id)
    }

    /// A real date `YYYY-MM-DD` (streams.normalize.local_midnight_ms accepts it).
    fn day(&mut self, py: Python<'_>, text: &str) -> Option<u32> {
        let key: [u8; 10] = text.as_bytes().try_into().ok()?;
        if let Some(&id) = self.day_ids.get(&key) {
            return Some(id);
        }
        let date = PyString::new(py, text);
        let midnight = self.rules.local_midnight_ms.bind(py).call1((&date,)).ok()?;
        let midnight_ms = exact_int(&midnight)?;
        let id = self.days.len() as u32;
        self.days.push(Day {
            text: date.unbind(),
            utf8: key,
            midnight_ms,
        });
        self.day_ids.insert(key, id);
        Some(id)
    }

    /// A real time `HH:MM:SS` (streams.normalize.time_of_day_ms accepts it) and its phase.
    fn clock(&mut self, py: Python<'_>, text: &str) -> Option<u64> {
        if text.len() != 8 {
            return None;
        }
        let key = key_of(text.as_bytes());
        if self.clocks.contains_key(&key) {
            return Some(key);
        }
        let ms = exact_int(&self.rules.time_of_day_ms.bind(py).call1((text,)).ok()?)?;
        self.add_clock(py, key, ms)?;
        Some(key)
    }

    /// Caches the time of day `ms` under `key`, with its session phase.
    fn add_clock(&mut self, py: Python<'_>, key: u64, ms: i64) -> Option<()> {
        let phase = self.rules.phase_of.bind(py).call1((ms,)).ok()?;
        let phase = phase.cast_exact::<PyString>().ok()?.clone();
        let phase_utf8: Box<[u8]> = phase.to_str().ok()?.as_bytes().into();
        self.clocks.insert(
            key,
            Clock {
                ms,
                phase: phase.unbind(),
                phase_utf8,
            },
        );
        Some(())
    }

    /// streams.normalize.build_quote's computed fields, line for line; None
    /// when an int division is beyond what doubles divide exactly.
    fn derive(&mut self, n: &Numbers, found: &Looked) -> Option<Derived> {
        let (mut limit_up, mut limit_down, mut up_cents, down_cents) = found.limits;
        if found.limit_free {
            limit_up = 0.0;
            limit_down = 0.0;
            up_cents = 0;
        }
        let traded = n.price > 0.0 && n.volume > 0;
        let prev_cents = pyround::round_int(n.prev_close * 100.0);
        let (change, change_pct, amplitude) = if traded && prev_cents > 0 {
            let cents = pyround::round_int(n.price * 100.0);
            let range = pyround::round_int(n.high * 100.0) - pyround::round_int(n.low * 100.0);
            (
                (cents - prev_cents) as f64 / 100.0,
                pyround::pct_half_up(cents - prev_cents, prev_cents),
                pyround::pct_half_up(range, prev_cents),
            )
        } else {
            (0.0, 0.0, 0.0)
        };
        let time_of_day = self.clocks[&found.clock].ms;
        let empty_book =
            n.bid_volumes.iter().all(|&v| v == 0) && n.ask_volumes.iter().all(|&v| v == 0);
        let (suspended, not_traded_yet) = if traded {
            (false, false)
        } else if time_of_day >= self.closing_ms || (time_of_day >= self.opening_ms && empty_book) {
            (true, false)
        } else {
            (false, true)
        };
        let bid_depth: i64 = n.bid_volumes.iter().sum();
        let depth = bid_depth + n.ask_volumes.iter().sum::<i64>();
        let (at_limit_up, at_limit_down) = if traded && up_cents != 0 {
            let cents = pyround::round_int(n.price * 100.0);
            (cents >= up_cents, cents <= down_cents)
        } else {
            (false, false)
        };
        let avg_price = if n.volume > 0 {
            pyround::round_digits(
                pyround::float_by_int(n.amount, n.volume)?,
                3,
                &mut self.scratch,
            )
        } else {
            0.0
        };
        let order_imbalance = if depth != 0 {
            let ratio = pyround::true_divide(
                (2 * i128::from(bid_depth) - i128::from(depth)) * 100,
                i128::from(depth),
            )?;
            pyround::round_digits(ratio, 2, &mut self.scratch)
        } else {
            0.0
        };
        Some(Derived {
            change,
            change_pct,
            limit_up,
            limit_down,
            traded,
            suspended,
            at_limit_up,
            at_limit_down,
            not_traded_yet,
            avg_price,
            amplitude,
            order_imbalance,
        })
    }

    /// The Quote dict, keys in schema order (as build_quote makes it; orjson keeps the order).
    fn quote_dict<'py>(&self, py: Python<'py>, q: &Quote) -> PyResult<Bound<'py, PyDict>> {
        let (n, found, d) = (&q.n, &q.found, &q.d);
        let s = &self.symbols[&found.symbol];
        let float = |x: f64| PyFloat::new(py, x).into_any();
        let int = |x: i64| x.into_pyobject(py).map(|i| i.into_any());
        let boolean = |b: bool| PyBool::new(py, b).to_owned().into_any();
        let floats = |xs: &[f64; BOOK_LEVELS]| PyList::new(py, xs.iter()).map(|l| l.into_any());
        let ints = |xs: &[i64; BOOK_LEVELS]| PyList::new(py, xs.iter()).map(|l| l.into_any());
        let values: [Bound<'py, PyAny>; 37] = [
            s.symbol.bind(py).clone().into_any(),
            s.code.bind(py).clone().into_any(),
            s.market.bind(py).clone().into_any(),
            s.board.bind(py).clone().into_any(),
            self.names[found.name as usize]
                .text
                .bind(py)
                .clone()
                .into_any(),
            boolean(self.names[found.name as usize].st),
            int(q.exchange_ts)?,
            self.days[found.day as usize]
                .text
                .bind(py)
                .clone()
                .into_any(),
            float(n.open),
            float(n.prev_close),
            float(n.price),
            float(n.high),
            float(n.low),
            float(n.bid),
            float(n.ask),
            int(n.volume)?,
            float(n.amount),
            floats(&n.bid_prices)?,
            ints(&n.bid_volumes)?,
            floats(&n.ask_prices)?,
            ints(&n.ask_volumes)?,
            float(d.change),
            float(d.change_pct),
            float(d.limit_up),
            float(d.limit_down),
            boolean(d.traded),
            boolean(d.suspended),
            boolean(d.at_limit_up),
            boolean(d.at_limit_down),
            int(q.receive_ts)?,
            int(q.process_ts)?,
            boolean(found.limit_free),
            boolean(d.not_traded_yet),
            self.clocks[&found.clock].phase.bind(py).clone().into_any(),
            float(d.avg_price),
            float(d.amplitude),
            float(d.order_imbalance),
        ];
        let dict = self.template.bind(py).copy()?;
        for (key, value) in self.keys.iter().zip(values) {
            dict.set_item(key.bind(py), value)?;
        }
        Ok(dict)
    }

    /// The codec's header + the Avro body of the Quote, fields in schema order.
    fn avro(&self, q: &Quote) -> Vec<u8> {
        let (n, found, d) = (&q.n, &q.found, &q.d);
        let s = &self.symbols[&found.symbol];
        let name = &self.names[found.name as usize];
        let mut buf = Vec::with_capacity(self.header.len() + 400);
        buf.extend_from_slice(&self.header);
        let symbol = found.symbol.to_le_bytes(); // the key is the symbol's 8 ASCII bytes
        avro::put_str(&mut buf, &symbol);
        avro::put_str(&mut buf, &symbol[2..]);
        avro::put_long(&mut buf, s.market_index);
        avro::put_long(&mut buf, i64::from(s.board_index));
        avro::put_str(&mut buf, &name.utf8);
        avro::put_bool(&mut buf, name.st);
        avro::put_long(&mut buf, q.exchange_ts);
        avro::put_str(&mut buf, &self.days[found.day as usize].utf8);
        for price in [n.open, n.prev_close, n.price, n.high, n.low, n.bid, n.ask] {
            avro::put_double(&mut buf, price);
        }
        avro::put_long(&mut buf, n.volume);
        avro::put_double(&mut buf, n.amount);
        avro::put_doubles(&mut buf, &n.bid_prices);
        avro::put_longs(&mut buf, &n.bid_volumes);
        avro::put_doubles(&mut buf, &n.ask_prices);
        avro::put_longs(&mut buf, &n.ask_volumes);
        for value in [d.change, d.change_pct, d.limit_up, d.limit_down] {
            avro::put_double(&mut buf, value);
        }
        for flag in [d.traded, d.suspended, d.at_limit_up, d.at_limit_down] {
            avro::put_bool(&mut buf, flag);
        }
        avro::put_long(&mut buf, q.receive_ts);
        avro::put_long(&mut buf, q.process_ts);
        avro::put_bool(&mut buf, found.limit_free);
        avro::put_bool(&mut buf, d.not_traded_yet);
        avro::put_str(&mut buf, &self.clocks[&found.clock].phase_utf8);
        for value in [d.avg_price, d.amplitude, d.order_imbalance] {
            avro::put_double(&mut buf, value);
        }
        buf
    }
}

/// `value` as a bool, only when it is exactly a `bool`.
pub(crate) fn exact_bool(value: &Bound<'_, PyAny>) -> Option<bool> {
    value.cast_exact::<PyBool>().ok().map(|b| b.is_true())
}

/// Writes the JSON the gateway pushes for a Quote's Avro payload.
#[pyclass(module = "hqstream_native", frozen)]
struct QuoteJsonWriter {
    header: Vec<u8>,
}

#[pymethods]
impl QuoteJsonWriter {
    /// `header`: what every payload of the current Quote schema starts with.
    #[new]
    fn new(header: Vec<u8>) -> Self {
        QuoteJsonWriter { header }
    }

    /// `(code, market, exchange_ts, json)` of a payload, the JSON byte for byte
    /// `orjson.dumps(codec.decode(payload))`; None for a payload of another
    /// schema version or anything not read exactly as Python reads it.
    fn write<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
    ) -> Option<(String, &'static str, i64, Bound<'py, PyBytes>)> {
        let payload = exact_bytes(payload)?;
        let d = quote_json::quote_json(&self.header, payload.as_bytes())?;
        Some((d.code, d.market, d.exchange_ts, PyBytes::new(py, &d.json)))
    }
}

/// `round(x, ndigits)` of a float as the compiled paths compute it: Python's,
/// bit for bit (the tests compare the two on values near and far from ties).
#[pyfunction]
fn round_float(x: f64, ndigits: usize) -> f64 {
    pyround::round_digits(x, ndigits, &mut String::new())
}

#[pymodule]
fn hqstream_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<QuoteParser>()?;
    m.add_class::<QuoteJsonWriter>()?;
    m.add_class::<quote_dict::QuoteMaker>()?;
    m.add_class::<indicators::IndicatorState>()?;
    m.add_class::<record_encoder::RecordEncoder>()?;
    m.add_class::<alerts::AlertWindows>()?;
    m.add_class::<market_stats::StatsBook>()?;
    m.add_class::<candles::CandleBook>()?;
    m.add_function(wrap_pyfunction!(redis_rows::quote_chunks, m)?)?;
    m.add_function(wrap_pyfunction!(round_float, m)?)?;
    m.add("QUOTE_FIELDS", QUOTE_FIELDS.to_vec())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
