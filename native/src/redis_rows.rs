//! The Redis sink's quote script arguments for a batch, compiled:
//! `streams.redis_lua`'s `_code_rows` and `_chunks` (the Python path stays the
//! reference, and serves a Redis Cluster and `HQ_STREAMS_NATIVE=off`).
//!
//! Per code, in first-seen order: its header row `[best, partition, code, name,
//! market, price, change, change_pct, amount, volume, ts_1 .. ts_n]` (strings,
//! numbers as Python's `repr` writes them), its two keys and its ticks' JSON;
//! chunked so that a chunk holds about `max_ticks` ticks and a code never
//! spans two. Each chunk's header rows come as the JSON `orjson.dumps` makes
//! of them.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use rustc_hash::FxHashMap;

use crate::quote_json::{put_long, put_string, put_thousandths};

/// One chunk: the keys (each code's quote HASH then ticks STREAM), the header
/// rows' JSON, the ticks' JSON (the caller's objects, in row order).
type Chunk<'py> = (
    Vec<Bound<'py, PyString>>,
    Bound<'py, PyBytes>,
    Vec<Bound<'py, PyAny>>,
);

/// A quote dict's value of `key` (KeyError as Python's `quote[key]`); `key` is
/// an interned str (`intern!`): no str is made per lookup.
fn field<'py>(
    quote: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    quote
        .get_item(key)?
        .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(key.clone().unbind()))
}

/// `repr(value)` into `out` as a JSON string: an int, and a float that is a whole
/// number of thousandths below 1e9, are written here (for such a float those are
/// Python's shortest digits, in fixed notation); anything else by Python's `repr`.
fn put_repr(out: &mut Vec<u8>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    out.push(b'"');
    let done = if let Ok(float) = value.cast_exact::<PyFloat>() {
        put_thousandths(out, float.value())
    } else if let Ok(int) = value.cast_exact::<PyInt>() {
        match int.extract::<i64>() {
            Ok(whole) => {
                put_long(out, whole);
                true
            }
            Err(_) => false, // beyond i64: Python's repr
        }
    } else {
        false
    };
    if !done {
        out.extend_from_slice(value.repr()?.to_str()?.as_bytes());
    }
    out.push(b'"');
    Ok(())
}

fn put_decimal(out: &mut Vec<u8>, value: i64) {
    out.push(b'"');
    put_long(out, value);
    out.push(b'"');
}

/// `quote_chunks(quotes, data, max_ticks, quote_key, ticks_key)`: the chunks
/// of a batch's quote script calls. `quotes` holds `(Quote dict, partition)`
/// pairs, `data` each quote's JSON (same order); a code's keys are
/// `quote_key[0] + code + quote_key[1]` and likewise `ticks_key`.
#[pyfunction]
pub fn quote_chunks<'py>(
    py: Python<'py>,
    quotes: &Bound<'py, PyList>,
    data: &Bound<'py, PyList>,
    max_ticks: usize,
    quote_key: (String, String),
    ticks_key: (String, String),
) -> PyResult<Vec<Chunk<'py>>> {
    if quotes.len() != data.len() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "quotes and data differ in length",
        ));
    }
    let n = quotes.len();
    let mut dicts: Vec<Bound<'py, PyDict>> = Vec::with_capacity(n);
    let mut codes: Vec<Bound<'py, PyString>> = Vec::with_capacity(n);
    let mut stamps: Vec<i64> = Vec::with_capacity(n);
    let mut partitions: Vec<Bound<'py, PyAny>> = Vec::with_capacity(n);
    for item in quotes.iter() {
        let pair = item.cast::<PyTuple>()?;
        let quote = pair.get_item(0)?.cast_into::<PyDict>()?;
        codes.push(field(&quote, intern!(py, "code"))?.cast_into::<PyString>()?);
        stamps.push(field(&quote, intern!(py, "exchange_ts"))?.extract::<i64>()?);
        partitions.push(pair.get_item(1)?);
        dicts.push(quote);
    }
    // Per code in first-seen order: the code and its first quote; each quote's
    // next one of the same code in `next` (END: the last).
    const END: usize = usize::MAX;
    let mut order: Vec<(&str, usize)> = Vec::new();
    let mut last_of: FxHashMap<&str, usize> = FxHashMap::default();
    let mut next = vec![END; n];
    for (i, code) in codes.iter().enumerate() {
        let text = code.to_str()?;
        match last_of.insert(text, i) {
            Some(last) => next[last] = i,
            None => order.push((text, i)),
        }
    }
    let mut chunks: Vec<Chunk<'py>> = Vec::new();
    let mut keys: Vec<Bound<'py, PyString>> = Vec::new();
    let mut header: Vec<u8> = vec![b'['];
    let mut blobs: Vec<Bound<'py, PyAny>> = Vec::new();
    let mut key = String::new();
    for &(text, first) in &order {
        let ticks = std::iter::successors(Some(first), |&i| Some(next[i]).filter(|&j| j != END));
        let (mut best, mut chosen, mut best_ts) = (0, first, -1);
        for (j, i) in ticks.clone().enumerate() {
            if stamps[i] >= best_ts {
                (best, chosen, best_ts) = (j, i, stamps[i]);
            }
        }
        let q = &dicts[chosen];
        if header.len() > 1 {
            header.push(b',');
        }
        header.push(b'[');
        put_decimal(&mut header, best as i64);
        header.push(b',');
        put_decimal(&mut header, partitions[chosen].extract::<i64>()?);
        header.push(b',');
        put_string(&mut header, text);
        for name in [intern!(py, "name"), intern!(py, "market")] {
            header.push(b',');
            put_string(
                &mut header,
                field(q, name)?.cast_into::<PyString>()?.to_str()?,
            );
        }
        let numbers = [
            intern!(py, "price"),
            intern!(py, "change"),
            intern!(py, "change_pct"),
            intern!(py, "amount"),
            intern!(py, "volume"),
        ];
        for name in numbers {
            header.push(b',');
            put_repr(&mut header, &field(q, name)?)?;
        }
        for i in ticks {
            header.push(b',');
            put_decimal(&mut header, stamps[i]);
            blobs.push(data.get_item(i)?);
        }
        header.push(b']');
        for (prefix, suffix) in [&quote_key, &ticks_key] {
            key.clear();
            key.push_str(prefix);
            key.push_str(text);
            key.push_str(suffix);
            keys.push(PyString::new(py, &key));
        }
        if blobs.len() >= max_ticks {
            header.push(b']');
            chunks.push((
                std::mem::take(&mut keys),
                PyBytes::new(py, &header),
                std::mem::take(&mut blobs),
            ));
            header.clear();
            header.push(b'[');
        }
    }
    if header.len() > 1 {
        header.push(b']');
        chunks.push((keys, PyBytes::new(py, &header), blobs));
    }
    Ok(chunks)
}
