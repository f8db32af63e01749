//! `streams.arbitration.Arbiter.judge`, compiled: the same decisions on the same
//! state. The state stays the Python arbiter's own dicts, sets and Counters
//! (its winners are stored, restored and forgotten by Python), read here once
//! per call of `QuoteParser.parse_run` and changed exactly as `judge` changes
//! them; only a disagreement's count and log line go back to Python
//! (`Arbiter._disagreement`).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PySet, PyString, PyTuple};

/// streams.arbitration.WINDOW: time units of a stock remembered as published.
const WINDOW: i64 = 64;

/// One Python `Arbiter`'s state and settings, as `judge` uses them.
pub(crate) struct Arbiter<'py> {
    object: Bound<'py, PyAny>,
    sources: Bound<'py, PySet>,
    newest: Bound<'py, PyDict>,
    winners: Bound<'py, PyDict>,
    winner_partition: Bound<'py, PyDict>,
    changes: Bound<'py, PyDict>,
    accepted: Bound<'py, PyDict>,
    filled: Bound<'py, PyDict>,
    dropped: Bound<'py, PyDict>,
    precision_ms: i64,
    stale_after_ms: i64,
    price_tolerance: f64,
    volume_tolerance: f64,
    stale: Bound<'py, PyString>,
    late: Bound<'py, PyString>,
    duplicate: Bound<'py, PyString>,
}

/// A stock's winner: (exchange time in units, source, price, volume, published mask).
struct Winner<'py> {
    unit: i64,
    source: Bound<'py, PyAny>,
    price: f64,
    volume: i64,
    seen: u64,
}

impl<'py> Arbiter<'py> {
    /// The state of `arbiter` (a `streams.arbitration.Arbiter`); an error when it is
    /// not shaped as one (the caller's Python path then judges).
    pub(crate) fn of(arbiter: &Bound<'py, PyAny>) -> PyResult<Self> {
        let py = arbiter.py();
        let dict = |name: &str| -> PyResult<Bound<'py, PyDict>> {
            Ok(arbiter.getattr(name)?.cast_into::<PyDict>()?)
        };
        let config = arbiter.getattr(intern!(py, "config"))?;
        Ok(Arbiter {
            object: arbiter.clone(),
            sources: arbiter
                .getattr(intern!(py, "sources"))?
                .cast_into::<PySet>()?,
            newest: dict("newest")?,
            winners: dict("winners")?,
            winner_partition: dict("winner_partition")?,
            changes: dict("changes")?,
            accepted: dict("accepted")?,
            filled: dict("filled")?,
            dropped: dict("dropped")?,
            precision_ms: config.getattr(intern!(py, "precision_ms"))?.extract()?,
            stale_after_ms: config.getattr(intern!(py, "stale_after_ms"))?.extract()?,
            price_tolerance: config.getattr(intern!(py, "price_tolerance"))?.extract()?,
            volume_tolerance: config.getattr(intern!(py, "volume_tolerance"))?.extract()?,
            stale: intern!(py, "stale").clone(),
            late: intern!(py, "late").clone(),
            duplicate: intern!(py, "duplicate").clone(),
        })
    }

    /// `Arbiter.judge`: true when the quote is dropped (and counted), false when it is
    /// published.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn judge(
        &self,
        code: &Bound<'py, PyString>,
        ts: i64,
        source: &Bound<'py, PyString>,
        partition: &Bound<'py, PyInt>,
        price: f64,
        volume: i64,
    ) -> PyResult<bool> {
        let py = code.py();
        if !self.sources.contains(source)? {
            self.sources.add(source)?;
        }
        let clocks = dict_in(&self.newest, partition)?;
        let own: i64 = match clocks.get_item(source)? {
            Some(value) => value.extract()?,
            None => -1,
        };
        let own = if ts > own {
            clocks.set_item(source, ts)?;
            ts
        } else {
            own
        };
        if clocks.len() > 1 {
            let mut lead = i64::MIN;
            for value in clocks.values().iter() {
                lead = lead.max(value.extract()?);
            }
            if i128::from(lead) - i128::from(own) > i128::from(self.stale_after_ms) {
                self.count_dropped(source, &self.stale)?;
                return Ok(true);
            }
        }
        let unit = ts.div_euclid(self.precision_ms);
        let winner = match self.winners.get_item(code)? {
            Some(found) => Some(winner_of(&found)?),
            None => None,
        };
        let winner = match winner {
            Some(w) if unit <= w.unit => w,
            newer => {
                let seen = match newer {
                    Some(w) if unit - w.unit < WINDOW => (w.seen << (unit - w.unit)) | 1,
                    _ => 1,
                };
                self.set(code, partition, unit, source.as_any(), price, volume, seen)?;
                count(&self.accepted, source.as_any())?;
                return Ok(false);
            }
        };
        let age = winner.unit - unit;
        let published = age < WINDOW && (winner.seen >> age) & 1 == 1;
        if winner.source.eq(source)? {
            // its own source again: a replay, as with a single feed
            if age < WINDOW && !published {
                self.mark(code, partition, &winner, age)?;
            }
            count(&self.accepted, source.as_any())?;
            return Ok(false);
        }
        if age >= WINDOW {
            self.count_dropped(source, &self.late)?;
            return Ok(true);
        }
        if !published {
            // the leading feed missed this snapshot: publish it late
            self.mark(code, partition, &winner, age)?;
            count(&self.accepted, source.as_any())?;
            count(&self.filled, source.as_any())?;
            return Ok(false);
        }
        self.count_dropped(source, &self.duplicate)?;
        if age == 0 && self.disagree(&winner, price, volume) {
            let found = self.winners.get_item(code)?;
            self.object.call_method1(
                intern!(py, "_disagreement"),
                (code, ts, source, found, price, volume),
            )?;
        }
        Ok(true)
    }

    /// `Arbiter._set` of the stock's winner with time unit ``winner.unit - age`` marked
    /// published.
    fn mark(
        &self,
        code: &Bound<'py, PyString>,
        partition: &Bound<'py, PyInt>,
        winner: &Winner<'py>,
        age: i64,
    ) -> PyResult<()> {
        let seen = winner.seen | 1 << age;
        self.set(
            code,
            partition,
            winner.unit,
            &winner.source,
            winner.price,
            winner.volume,
            seen,
        )
    }

    /// `dropped[source, reason] += 1`.
    fn count_dropped(
        &self,
        source: &Bound<'py, PyString>,
        reason: &Bound<'py, PyString>,
    ) -> PyResult<()> {
        let key = PyTuple::new(source.py(), [source.as_any(), reason.as_any()])?;
        count(&self.dropped, key.as_any())
    }

    fn disagree(&self, winner: &Winner<'py>, price: f64, volume: i64) -> bool {
        (price - winner.price).abs() > self.price_tolerance
            || ((i128::from(volume) - i128::from(winner.volume)).abs() as f64)
                > self.volume_tolerance * (winner.volume.max(1) as f64)
    }

    /// `Arbiter._set`: the stock's winner, its partition and the change to store.
    #[allow(clippy::too_many_arguments)]
    fn set(
        &self,
        code: &Bound<'py, PyString>,
        partition: &Bound<'py, PyInt>,
        unit: i64,
        source: &Bound<'py, PyAny>,
        price: f64,
        volume: i64,
        seen: u64,
    ) -> PyResult<()> {
        let py = code.py();
        let winner = (unit, source, price, volume, seen).into_pyobject(py)?;
        self.winners.set_item(code, &winner)?;
        self.winner_partition.set_item(code, partition)?;
        dict_in(&self.changes, partition)?.set_item(code, winner)
    }
}

fn winner_of<'py>(found: &Bound<'py, PyAny>) -> PyResult<Winner<'py>> {
    let tuple = found.cast::<PyTuple>()?;
    Ok(Winner {
        unit: tuple.get_item(0)?.extract()?,
        source: tuple.get_item(1)?,
        price: tuple.get_item(2)?.extract()?,
        volume: tuple.get_item(3)?.extract()?,
        seen: tuple.get_item(4)?.extract()?,
    })
}

/// `parent[key]`, a dict, made empty first if missing (`parent.setdefault(key, {})`).
fn dict_in<'py>(
    parent: &Bound<'py, PyDict>,
    key: &Bound<'py, PyInt>,
) -> PyResult<Bound<'py, PyDict>> {
    if let Some(found) = parent.get_item(key)? {
        return Ok(found.cast_into::<PyDict>()?);
    }
    let made = PyDict::new(parent.py());
    parent.set_item(key, &made)?;
    Ok(made)
}

/// `counter[key] += 1` on a `collections.Counter` (a dict).
fn count(counter: &Bound<'_, PyDict>, key: &Bound<'_, PyAny>) -> PyResult<()> {
    let now: i64 = match counter.get_item(key)? {
        Some(value) => value.extract()?,
        None => 0,
    };
    counter.set_item(key, now + 1)
}
