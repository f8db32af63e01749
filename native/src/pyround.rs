//! Python's arithmetic where streams.normalize relies on it, bit for bit.

use std::fmt::Write;

/// `round(x)` of a float: half to even, as an int.
pub fn round_int(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// `round(x, ndigits)` of a float: CPython rounds the exact binary value to
/// `ndigits` decimals, half to even (`_Py_dg_dtoa` mode 3), and reads that
/// decimal back (`_Py_dg_strtod`); Rust's exact formatting and correctly
/// rounded parsing do the same. `scratch` is a reusable buffer.
pub fn round_digits(x: f64, ndigits: usize, scratch: &mut String) -> f64 {
    scratch.clear();
    write!(scratch, "{x:.ndigits$}").expect("formatting into a String cannot fail");
    scratch.parse().expect("a formatted finite float parses")
}

/// streams.normalize.pct_half_up: `delta / base` in percent, half up (away
/// from zero) to 2 decimals, on the exact integers; `base` > 0.
pub fn pct_half_up(delta_cents: i64, base_cents: i64) -> f64 {
    let num = i128::from(delta_cents.unsigned_abs()) * 10_000;
    let base = i128::from(base_cents);
    let hundredths = (2 * num + base) / (2 * base);
    let signed = if delta_cents >= 0 {
        hundredths
    } else {
        -hundredths
    };
    signed as f64 / 100.0
}

/// `x / n` of a Python float and int: CPython turns `n` into a double
/// (exact up to 2**53), then divides; None beyond that.
pub fn float_by_int(x: f64, n: i64) -> Option<f64> {
    (n.unsigned_abs() <= EXACT as u64 && n != 0).then(|| x / n as f64)
}

/// Ints up to this magnitude are exact doubles.
const EXACT: i128 = 1 << 53;

/// `a / b` of two Python ints, when both are exactly representable as
/// doubles (then CPython divides them as doubles: correctly rounded); None
/// for larger ones, whose exact quotient this does not compute.
pub fn true_divide(a: i128, b: i128) -> Option<f64> {
    (a.abs() <= EXACT && b.abs() <= EXACT && b != 0).then(|| a as f64 / b as f64)
}
