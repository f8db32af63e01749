//! Avro binary encoders of record schemas, built once from a schema's JSON:
//! schemas/avro_compiler.py's encoders compiled (the same schemas, the same
//! bytes: fastavro's).
//!
//! Compiled are the types avro_compiler compiles: `double`, `float`,
//! `boolean`, `int`, `long`, `string` (with or without a `logicalType`),
//! `enum`, arrays of the primitive types, nested records, and two-branch
//! unions with `null`. A value is taken only in the form whose bytes are
//! certain: an exact `bool`, `int` and `str`, a `float` (or an exact `int`)
//! for a double, a `dict` for a record, a `list` or `tuple` for an array.
//! Anything else raises `TypeError`/`KeyError`/`ValueError`/`OverflowError`,
//! and the codec lets fastavro decide (encode it or name the error), as it
//! does for the Python encoders.

use pyo3::exceptions::{PyKeyError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFloat, PyList, PyString, PyTuple};

use crate::avro::{put_bool, put_double, put_long, put_str};
use crate::{exact_bool, exact_int};

/// How one value is written.
enum Kind {
    Double,
    Float,
    Boolean,
    Int,
    Long,
    Str,
    Enum(Vec<String>),
    Array(Box<Kind>),
    Record(Vec<(Py<PyString>, Kind)>),
    /// a union of `null` and `inner`; `null_index`: the position of `null` in it
    Nullable {
        null_index: i64,
        inner: Box<Kind>,
    },
}

fn primitive(name: &str) -> Option<Kind> {
    match name {
        "double" => Some(Kind::Double),
        "float" => Some(Kind::Float),
        "boolean" => Some(Kind::Boolean),
        "int" => Some(Kind::Int),
        "long" => Some(Kind::Long),
        "string" => Some(Kind::Str),
        _ => None,
    }
}

fn is_primitive(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Double | Kind::Float | Kind::Boolean | Kind::Int | Kind::Long | Kind::Str
    )
}

fn not_compiled(what: &Bound<'_, PyAny>) -> PyErr {
    PyValueError::new_err(format!("not compiled: {what}"))
}

/// avro_compiler._type_name: a primitive (a name, or `{"type": name}` with at
/// most a `logicalType`), an enum, an array of primitives.
fn named_kind(schema: &Bound<'_, PyAny>) -> PyResult<Option<Kind>> {
    if let Ok(name) = schema.cast::<PyString>() {
        return Ok(primitive(name.to_str()?));
    }
    let Ok(dict) = schema.cast::<PyDict>() else {
        return Ok(None);
    };
    let Some(kind) = dict.get_item("type")? else {
        return Ok(None);
    };
    let Ok(kind) = kind.cast::<PyString>() else {
        return Ok(None);
    };
    match kind.to_str()? {
        "enum" => {
            let symbols: Vec<String> = dict
                .get_item("symbols")?
                .ok_or_else(|| not_compiled(schema))?
                .extract()?;
            Ok(Some(Kind::Enum(symbols)))
        }
        "array" => {
            let items = dict.get_item("items")?;
            let items = match &items {
                Some(items) => named_kind(items)?,
                None => None,
            };
            Ok(items
                .filter(is_primitive)
                .map(|items| Kind::Array(Box::new(items))))
        }
        name => {
            for key in dict.keys() {
                let key: String = key.extract()?;
                if key != "type" && key != "logicalType" {
                    return Ok(None);
                }
            }
            Ok(primitive(name))
        }
    }
}

/// avro_compiler._value_encoder: a record, or what `named_kind` knows.
fn value_kind(py: Python<'_>, schema: &Bound<'_, PyAny>) -> PyResult<Option<Kind>> {
    if let Ok(dict) = schema.cast::<PyDict>() {
        if let Some(kind) = dict.get_item("type")? {
            if kind.extract::<String>().is_ok_and(|k| k == "record") {
                return record_kind(py, dict).map(Some);
            }
        }
    }
    named_kind(schema)
}

/// A field's type: `named_kind`, else a nullable union or a nested record.
fn field_kind(py: Python<'_>, schema: &Bound<'_, PyAny>) -> PyResult<Kind> {
    if let Some(kind) = named_kind(schema)? {
        return Ok(kind);
    }
    if let Ok(union) = schema.cast::<PyList>() {
        let is_null = |i: usize| -> PyResult<bool> {
            Ok(union
                .get_item(i)?
                .extract::<String>()
                .is_ok_and(|t| t == "null"))
        };
        if union.len() == 2 && (is_null(0)? || is_null(1)?) {
            let null_index = if is_null(0)? { 0 } else { 1 };
            if let Some(inner) = value_kind(py, &union.get_item(1 - null_index)?)? {
                return Ok(Kind::Nullable {
                    null_index: null_index as i64,
                    inner: Box::new(inner),
                });
            }
        }
        return Err(not_compiled(schema));
    }
    value_kind(py, schema)?.ok_or_else(|| not_compiled(schema))
}

fn record_kind(py: Python<'_>, schema: &Bound<'_, PyDict>) -> PyResult<Kind> {
    let fields = schema
        .get_item("fields")?
        .ok_or_else(|| not_compiled(schema.as_any()))?;
    let mut out = Vec::new();
    for field in fields.try_iter()? {
        let field = field?;
        let name: String = field.get_item("name")?.extract()?;
        let kind = field_kind(py, &field.get_item("type")?)?;
        out.push((PyString::intern(py, &name).unbind(), kind));
    }
    Ok(Kind::Record(out))
}

fn expected(what: &str, value: &Bound<'_, PyAny>) -> PyErr {
    let got = value
        .get_type()
        .name()
        .map_or_else(|_| "?".to_owned(), |n| n.to_string());
    PyTypeError::new_err(format!("expected {what}, got {got}"))
}

/// An Avro long's value: exactly an `int` (not a bool) in 64 bits.
fn long_of(value: &Bound<'_, PyAny>) -> PyResult<i64> {
    exact_int(value).ok_or_else(|| expected("an int of 64 bits", value))
}

fn write(py: Python<'_>, kind: &Kind, value: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    match kind {
        Kind::Double => put_double(out, double_of(value)?),
        Kind::Float => {
            let x = double_of(value)?;
            let y = x as f32;
            if y.is_infinite() && x.is_finite() {
                return Err(PyOverflowError::new_err(
                    "float too large to pack with f format",
                ));
            }
            out.extend_from_slice(&y.to_le_bytes());
        }
        Kind::Boolean => put_bool(
            out,
            exact_bool(value).ok_or_else(|| expected("a bool", value))?,
        ),
        Kind::Int => {
            let n = long_of(value)?;
            if i32::try_from(n).is_err() {
                return Err(PyOverflowError::new_err(format!(
                    "{n} is out of range for an Avro int"
                )));
            }
            put_long(out, n);
        }
        Kind::Long => put_long(out, long_of(value)?),
        Kind::Str => {
            if !value.is_exact_instance_of::<PyString>() {
                return Err(expected("a str", value));
            }
            put_str(out, value.cast::<PyString>()?.to_str()?.as_bytes());
        }
        Kind::Enum(symbols) => {
            let text = value
                .cast::<PyString>()
                .map_err(|_| expected("a str", value))?
                .to_str()?;
            match symbols.iter().position(|s| s == text) {
                Some(i) => put_long(out, i as i64),
                None => return Err(PyKeyError::new_err(text.to_owned())),
            }
        }
        Kind::Array(items) => {
            if let Ok(list) = value.cast_exact::<PyList>() {
                write_items(py, items, list.len(), list.iter(), out)?;
            } else if let Ok(tuple) = value.cast_exact::<PyTuple>() {
                write_items(py, items, tuple.len(), tuple.iter(), out)?;
            } else {
                return Err(expected("a list", value));
            }
        }
        Kind::Record(fields) => {
            let record = value
                .cast::<PyDict>()
                .map_err(|_| expected("a dict", value))?;
            for (name, kind) in fields {
                let name = name.bind(py);
                let Some(item) = record.get_item(name)? else {
                    return Err(PyKeyError::new_err(name.clone().unbind()));
                };
                write(py, kind, &item, out)?;
            }
        }
        Kind::Nullable { null_index, inner } => {
            if value.is_none() {
                put_long(out, *null_index);
            } else {
                put_long(out, 1 - *null_index);
                write(py, inner, value, out)?;
            }
        }
    }
    Ok(())
}

/// A double's value: a `float` (or a subclass: numpy's), or an exact `int` in
/// i64 (converted to the nearest double, as Python converts it).
fn double_of(value: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(x) = value.cast::<PyFloat>() {
        return Ok(x.value());
    }
    let n = exact_int(value).ok_or_else(|| expected("a float", value))?;
    Ok(n as f64)
}

fn write_items<'py>(
    py: Python<'py>,
    items: &Kind,
    n: usize,
    values: impl Iterator<Item = Bound<'py, PyAny>>,
    out: &mut Vec<u8>,
) -> PyResult<()> {
    if n > 0 {
        put_long(out, n as i64); // one block, as fastavro writes a list
        for value in values {
            write(py, items, &value, out)?;
        }
    }
    out.push(0);
    Ok(())
}

/// Writes `prefix` + the Avro binary body of one record schema.
#[pyclass(module = "hqstream_native", frozen)]
pub struct RecordEncoder {
    prefix: Vec<u8>,
    record: Kind,
}

#[pymethods]
impl RecordEncoder {
    /// `schema`: the record's JSON (as loaded from its `.avsc`); ValueError when a
    /// field's type is not one this compiles (see the module doc).
    #[new]
    #[pyo3(signature = (schema, prefix=Vec::new()))]
    fn new(py: Python<'_>, schema: &Bound<'_, PyDict>, prefix: Vec<u8>) -> PyResult<Self> {
        let is_record = schema
            .get_item("type")?
            .is_some_and(|t| t.extract::<String>().is_ok_and(|t| t == "record"));
        if !is_record {
            return Err(not_compiled(schema.as_any()));
        }
        Ok(RecordEncoder {
            prefix,
            record: record_kind(py, schema)?,
        })
    }

    fn __call__<'py>(
        &self,
        py: Python<'py>,
        record: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::with_capacity(self.prefix.len() + 256);
        out.extend_from_slice(&self.prefix);
        write(py, &self.record, record, &mut out)?;
        Ok(PyBytes::new(py, &out))
    }
}
