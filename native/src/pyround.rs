//! Python's arithmetic where streams.normalize relies on it, bit for bit.

use std::fmt::Write;

use crate::line::POWERS_OF_TEN;

/// `round(x)` of a float: half to even, as an int.
pub fn round_int(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// `round(x, ndigits)` of a float: CPython rounds the exact binary value to
/// `ndigits` decimals, half to even (`_Py_dg_dtoa` mode 3), and reads that
/// decimal back (`_Py_dg_strtod`); Rust's exact formatting and correctly
/// rounded parsing do the same. `scratch` is a reusable buffer.
///
/// Unless `x * 10^ndigits` comes out as a half-integer, one multiplication and
/// one division give the same double ([`round_digits_clear`]): the exact
/// formatting was ~2 k of the compiled parse's ~18 k instructions a line
/// (docs/benchmarks.md, "Where a steady tick's cost is").
pub fn round_digits(x: f64, ndigits: usize, scratch: &mut String) -> f64 {
    if let Some(rounded) = round_digits_clear(x, ndigits) {
        return rounded;
    }
    scratch.clear();
    write!(scratch, "{x:.ndigits$}").expect("formatting into a String cannot fail");
    scratch.parse().expect("a formatted finite float parses")
}

/// Below this every half-integer is a double (and a double's spacing under 1).
const TWO_52: f64 = 4_503_599_627_370_496.0;

/// `round(x, ndigits)` when `x * 10^ndigits` does not come out as a tie; None when
/// it does (or for `ndigits` > 15, a non-finite `x`, or a product of 2^52 or more),
/// where only the exact decimal can tell.
///
/// The product `y` is the double nearest the exact `x * 10^ndigits`, and below
/// 2^52 every half-integer is a double: so `y` lies on the exact value's side of
/// any tie, or on the tie itself. Off a tie both round to the same integer `r`
/// (ties are the only decision points), and `r / 10^ndigits`, the correctly
/// rounded quotient of two exact doubles, is the double nearest the decimal
/// `r * 10^-ndigits`: what CPython reads back.
pub fn round_digits_clear(x: f64, ndigits: usize) -> Option<f64> {
    let scale = *POWERS_OF_TEN.get(ndigits)?;
    let y = x * scale;
    if y.is_nan() || y.abs() >= TWO_52 {
        return None; // the infinities too
    }
    let fraction = (y - y.trunc()).abs(); // exact
    if fraction == 0.5 {
        return None;
    }
    Some(y.round() / scale)
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
