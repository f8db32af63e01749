//! A batch's Quote dicts and JSON made from their Avro payloads, after the burst: the
//! stream worker's parse makes a line's Avro only (`QuoteParser.parse_avro`), and the
//! batch's finish makes the rest with this (`streams.native_parse.quote_maker`).

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyString};
use rustc_hash::FxHashMap;

use crate::quote_json::{quote_json, Reader};
use crate::{quote_keys, QUOTE_FIELDS};

/// Distinct string values kept before the cache starts again (codes, names, days, phases).
const STRINGS_MAX: usize = 65_536;

/// Makes the Quote dict and the JSON of payloads of the current Quote schema.
#[pyclass(module = "hqstream_native")]
pub struct QuoteMaker {
    header: Vec<u8>,
    keys: Vec<Py<PyString>>,
    /// every key to None, in order: a dict is a copy of it, made at its full size at once
    template: Py<PyDict>,
    /// each string value once (a stock's code and name in every quote of the day)
    strings: FxHashMap<Box<[u8]>, Py<PyString>>,
}

#[pymethods]
impl QuoteMaker {
    /// `header`: what every payload of the current Quote schema starts with.
    #[new]
    fn new(py: Python<'_>, header: Vec<u8>) -> PyResult<Self> {
        let (keys, template) = quote_keys(py)?;
        Ok(QuoteMaker {
            header,
            keys,
            template,
            strings: FxHashMap::default(),
        })
    }

    /// `(dicts, jsons)` of `payloads`: each dict what the codec decodes (keys in the
    /// schema's order, the same values and types), each JSON byte for byte
    /// `orjson.dumps` of it (the gateway's writer); both None for a payload either
    /// cannot read exactly so (the caller's Python decodes it).
    fn make<'py>(
        &mut self,
        py: Python<'py>,
        payloads: Vec<Bound<'py, pyo3::types::PyBytes>>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        let dicts = PyList::empty(py);
        let jsons = PyList::empty(py);
        if self.strings.len() >= STRINGS_MAX {
            self.strings.clear();
        }
        for payload in &payloads {
            let bytes = payload.as_bytes();
            let made = match quote_json(&self.header, bytes) {
                Some(decoded) => self
                    .dict(py, &bytes[self.header.len()..])?
                    .map(|d| (d, decoded.json)),
                None => None,
            };
            match made {
                Some((dict, json)) => {
                    dicts.append(dict)?;
                    jsons.append(pyo3::types::PyBytes::new(py, &json))?;
                }
                None => {
                    dicts.append(py.None())?;
                    jsons.append(py.None())?;
                }
            }
        }
        Ok((dicts, jsons))
    }
}

impl QuoteMaker {
    /// The dict of a payload's body (quote_json read it already: None never comes
    /// from a payload it accepted, but is answered rather than trusted).
    fn dict<'py>(&mut self, py: Python<'py>, body: &[u8]) -> PyResult<Option<Bound<'py, PyDict>>> {
        let mut r = Reader { buf: body, pos: 0 };
        let mut values: Vec<Bound<'py, PyAny>> = Vec::with_capacity(QUOTE_FIELDS.len());
        for (_, kind) in QUOTE_FIELDS.iter() {
            let value = match *kind {
                "string" => {
                    let Some(n) = r.long().and_then(|n| usize::try_from(n).ok()) else {
                        return Ok(None);
                    };
                    let Some(text) = r.take(n) else {
                        return Ok(None);
                    };
                    match self.string(py, text) {
                        Some(s) => s.into_any(),
                        None => return Ok(None),
                    }
                }
                "long" => match r.long() {
                    Some(v) => v.into_pyobject(py)?.into_any(),
                    None => return Ok(None),
                },
                "double" => match r.double() {
                    Some(v) => PyFloat::new(py, v).into_any(),
                    None => return Ok(None),
                },
                "boolean" => match r.boolean() {
                    Some(v) => PyBool::new(py, v).to_owned().into_any(),
                    None => return Ok(None),
                },
                "array:double" | "array:long" => {
                    let list = PyList::empty(py);
                    loop {
                        let Some(count) = r.long() else {
                            return Ok(None);
                        };
                        if count == 0 {
                            break;
                        }
                        if count < 0 {
                            return Ok(None);
                        }
                        for _ in 0..count {
                            if *kind == "array:double" {
                                let Some(v) = r.double() else {
                                    return Ok(None);
                                };
                                list.append(PyFloat::new(py, v))?;
                            } else {
                                let Some(v) = r.long() else {
                                    return Ok(None);
                                };
                                list.append(v)?;
                            }
                        }
                    }
                    list.into_any()
                }
                _ => {
                    let Some(symbols) = kind.strip_prefix("enum:") else {
                        return Ok(None);
                    };
                    let Some(symbol) = r
                        .long()
                        .and_then(|i| usize::try_from(i).ok())
                        .and_then(|i| symbols.split(',').nth(i))
                    else {
                        return Ok(None);
                    };
                    match self.string(py, symbol.as_bytes()) {
                        Some(s) => s.into_any(),
                        None => return Ok(None),
                    }
                }
            };
            values.push(value);
        }
        if r.pos != body.len() {
            return Ok(None);
        }
        let dict = self.template.bind(py).copy()?;
        for (key, value) in self.keys.iter().zip(values) {
            dict.set_item(key.bind(py), value)?;
        }
        Ok(Some(dict))
    }

    /// The str of UTF-8 `text`, made once.
    fn string<'py>(&mut self, py: Python<'py>, text: &[u8]) -> Option<Bound<'py, PyString>> {
        if let Some(s) = self.strings.get(text) {
            return Some(s.bind(py).clone());
        }
        let s = PyString::new(py, std::str::from_utf8(text).ok()?);
        self.strings.insert(text.into(), s.clone().unbind());
        Some(s)
    }
}
