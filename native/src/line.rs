//! The Shanghai/Shenzhen `$` line as plain Rust values: no Python here.
//!
//! Accepts only the plain form of every number (ASCII digits, one optional
//! `.` with digits on both sides) and refuses everything else, so a field the
//! Python parser would read differently, or reject, never gets through.

/// `$`-separated fields of a Shanghai/Shenzhen line (streams.parse.FIELD_COUNT).
pub const FIELD_COUNT: usize = 33;
/// Levels of each side of the order book.
pub const BOOK_LEVELS: usize = 5;

/// Bounds no real quote reaches (streams.parse's constants, passed in from Python).
#[derive(Clone, Copy)]
pub struct Bounds {
    pub max_price: f64,
    pub min_prev_close: f64,
    pub max_volume: i64,
    pub max_amount: f64,
}

/// The numbers of one line, checked against every bound streams.parse checks.
pub struct Numbers {
    pub open: f64,
    pub prev_close: f64,
    pub price: f64,
    pub high: f64,
    pub low: f64,
    pub bid: f64,
    pub ask: f64,
    pub volume: i64,
    pub amount: f64,
    pub bid_prices: [f64; BOOK_LEVELS],
    pub bid_volumes: [i64; BOOK_LEVELS],
    pub ask_prices: [f64; BOOK_LEVELS],
    pub ask_volumes: [i64; BOOK_LEVELS],
}

/// Exactly FIELD_COUNT fields, or None. (One pass over the bytes: the fields are
/// short, and `str::split`'s search per field cost more than the fields' parse.)
pub fn split_fields(line: &str) -> Option<[&str; FIELD_COUNT]> {
    let mut fields = [""; FIELD_COUNT];
    let mut filled = 0;
    let mut begin = 0;
    for (at, &byte) in line.as_bytes().iter().enumerate() {
        if byte == b'$' {
            if filled == FIELD_COUNT - 1 {
                return None; // a 34th field
            }
            fields[filled] = &line[begin..at]; // `$` is ASCII: a char boundary
            filled += 1;
            begin = at + 1;
        }
    }
    if filled != FIELD_COUNT - 1 {
        return None;
    }
    fields[filled] = &line[begin..];
    Some(fields)
}

/// `digits` or `digits.digits`: what Python's `float()` reads the same way as
/// Rust's (both correctly rounded); None for anything else (signs, exponents,
/// `inf`/`nan`, spaces, `_`, non-ASCII digits, a bare `.`).
///
/// Read in one pass (a price, a volume: ~20 of them a line): a decimal of at
/// most 15 digits is its digits over a power of ten, both exact doubles, so
/// their one correctly rounded division is the correctly rounded value of the
/// decimal, the double `float()` reads (Clinger's fast path); so is 16 digits
/// without a dot, rounded once as an integer; a longer one takes Rust's full
/// parse.
pub fn plain_float(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let mut digits: u64 = 0; // read up to 16 digits (the fast path below); wraps beyond, unused
    let (mut whole, mut decimals, mut dot) = (0usize, 0usize, false);
    for &byte in bytes {
        match byte {
            b'0'..=b'9' => {
                digits = digits.wrapping_mul(10).wrapping_add(u64::from(byte - b'0'));
                if dot {
                    decimals += 1;
                } else {
                    whole += 1;
                }
            }
            b'.' if !dot => dot = true,
            _ => return None,
        }
    }
    if whole == 0 || (dot && decimals == 0) {
        return None;
    }
    if bytes.len() <= POWERS_OF_TEN.len() {
        // 15 digits and a dot (an exact double), or 16 digits (rounded once, as
        // the integer they are)
        return Some(digits as f64 / POWERS_OF_TEN[decimals]);
    }
    let value: f64 = text.parse().ok()?;
    value.is_finite().then_some(value)
}

/// Powers of ten a double holds exactly (up to 10^22; these suffice here).
pub const POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// ASCII digits only, at most 18 of them (fits an i64); None otherwise.
pub fn plain_int(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() > 18 {
        return None;
    }
    let mut value: i64 = 0;
    for &byte in bytes {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(byte - b'0');
    }
    Some(value)
}

/// The numbers of a line's fields, when every one is plain and within
/// `bounds` and high/low are consistent; None when streams.parse would
/// refuse the line or read one of them differently.
pub fn numbers(f: &[&str; FIELD_COUNT], bounds: &Bounds) -> Option<Numbers> {
    let price_at = |index: usize| plain_float(f[index]).filter(|&p| p <= bounds.max_price);
    let volume_at = |index: usize| plain_int(f[index]).filter(|&v| v < bounds.max_volume);
    let mut bid_prices = [0.0; BOOK_LEVELS];
    let mut bid_volumes = [0; BOOK_LEVELS];
    let mut ask_prices = [0.0; BOOK_LEVELS];
    let mut ask_volumes = [0; BOOK_LEVELS];
    for level in 0..BOOK_LEVELS {
        bid_volumes[level] = volume_at(11 + 2 * level)?;
        bid_prices[level] = price_at(12 + 2 * level)?;
        ask_volumes[level] = volume_at(21 + 2 * level)?;
        ask_prices[level] = price_at(22 + 2 * level)?;
    }
    let n = Numbers {
        open: price_at(2)?,
        prev_close: price_at(3)?,
        price: price_at(4)?,
        high: price_at(5)?,
        low: price_at(6)?,
        bid: price_at(7)?,
        ask: price_at(8)?,
        volume: volume_at(9)?,
        amount: plain_float(f[10]).filter(|&a| a < bounds.max_amount)?,
        bid_prices,
        bid_volumes,
        ask_prices,
        ask_volumes,
    };
    if 0.0 < n.prev_close && n.prev_close < bounds.min_prev_close {
        return None;
    }
    if n.high < n.low && n.high != 0.0 {
        return None;
    }
    Some(n)
}
