//! A Quote's Avro body straight to the JSON the gateway pushes, byte for byte
//! what `orjson.dumps` makes of the record the codec decodes; None for any
//! payload it cannot read exactly so (the caller then decodes in Python).

use std::fmt::Write;

use crate::QUOTE_FIELDS;

/// The Quote's routing fields and its JSON object.
pub struct Decoded {
    pub code: String,
    pub market: &'static str,
    pub exchange_ts: i64,
    pub json: Vec<u8>,
}

pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// A zig-zag varint of at most 10 bytes whose value fits an i64.
    pub(crate) fn long(&mut self) -> Option<i64> {
        let mut z: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return None;
            }
            z |= bits << shift;
            if b & 0x80 == 0 {
                return Some((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        None
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    pub(crate) fn string(&mut self) -> Option<&'a str> {
        let n = usize::try_from(self.long()?).ok()?;
        std::str::from_utf8(self.take(n)?).ok()
    }

    pub(crate) fn double(&mut self) -> Option<f64> {
        let value = f64::from_le_bytes(self.take(8)?.try_into().ok()?);
        value.is_finite().then_some(value) // orjson writes null for inf/nan
    }

    pub(crate) fn boolean(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// Every item of an array of positive-count blocks, each written by `item`.
    fn array(
        &mut self,
        out: &mut Vec<u8>,
        item: fn(&mut Self, &mut Vec<u8>) -> Option<()>,
    ) -> Option<()> {
        out.push(b'[');
        let mut first = true;
        loop {
            let count = self.long()?;
            if count == 0 {
                break;
            }
            if count < 0 {
                return None; // a block with a byte size: no writer of ours makes them
            }
            for _ in 0..count {
                if !first {
                    out.push(b',');
                }
                first = false;
                item(self, out)?;
            }
        }
        out.push(b']');
        Some(())
    }
}

/// A JSON string as orjson writes it: `"` and `\` escaped, \b \t \n \f \r
/// short, other control characters `\u00XX`, everything else as it is.
pub(crate) fn put_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for &b in text.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// A finite double below 1e9 in magnitude that is a whole number of thousandths
/// (prices, percents, averages), as orjson writes it; false for any other.
///
/// Below 1e9 two such decimals never share a double, so the decimal that
/// reads back as `value` is its shortest (and nearest) form: `12.69`,
/// `100.0`, `-0.0`, `0.001`, all in fixed notation.
pub(crate) fn put_thousandths(out: &mut Vec<u8>, value: f64) -> bool {
    let magnitude = value.abs();
    if magnitude.is_nan() || magnitude >= 1e9 {
        return false;
    }
    // the nearest integer (a conversion, not a call to `round`): a value near a
    // half-integer is no thousandth, and the check below refuses it either way
    let thousandths = (magnitude * 1000.0 + 0.5) as u64;
    if thousandths as f64 / 1000.0 != magnitude {
        return false;
    }
    if value.is_sign_negative() {
        out.push(b'-');
    }
    put_u64(out, thousandths / 1000);
    out.push(b'.');
    let fraction = thousandths % 1000;
    let digits = [
        b'0' + (fraction / 100) as u8,
        b'0' + (fraction / 10 % 10) as u8,
        b'0' + (fraction % 10) as u8,
    ];
    let kept = digits
        .iter()
        .rposition(|&d| d != b'0')
        .map_or(1, |last| last + 1);
    out.extend_from_slice(&digits[..kept]);
    true
}

/// "00" to "99": two digits per division.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

fn put_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    while value >= 100 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if value >= 10 {
        let pair = value as usize * 2;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        buf[at] = b'0' + value as u8;
    }
    out.extend_from_slice(&buf[at..]);
}

/// A finite double as orjson writes it: the shortest digits that read back
/// as the same double, the nearest of them (as Python's repr), in fixed notation for decimal
/// exponents -5..15 (`123.0`, `0.00001`), else `1.5e+16` / `1.5e-6`.
fn put_double(out: &mut Vec<u8>, value: f64, scratch: &mut String) -> Option<()> {
    if put_thousandths(out, value) {
        return Some(());
    }
    // Rust's shortest digits are Python's (and orjson's) when they are also the
    // nearest decimal of that length (correctly rounded, half to even); where
    // they are not (a tie, or a double at a power of two), Python may pick
    // another of the shortest: None, the caller's Python writes it.
    scratch.clear();
    write!(scratch, "{value:e}").expect("formatting into a String cannot fail");
    let mantissa = scratch.split_once('e').map_or("", |(m, _)| m);
    let precision = mantissa
        .bytes()
        .filter(u8::is_ascii_digit)
        .count()
        .checked_sub(1)?;
    let shortest_len = scratch.len();
    write!(scratch, "{value:.precision$e}").expect("formatting into a String cannot fail");
    let (shortest, nearest) = scratch.split_at(shortest_len);
    if shortest != nearest {
        return None;
    }
    scratch.truncate(shortest_len);
    let (mantissa, exponent) = scratch
        .split_once('e')
        .expect("LowerExp writes an exponent");
    let exponent: i32 = exponent
        .parse()
        .expect("LowerExp writes an integer exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    out.extend_from_slice(sign.as_bytes());
    if (-5..16).contains(&exponent) {
        if exponent < 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-exponent - 1) as usize));
            out.extend_from_slice(digits.as_bytes());
        } else {
            let whole = exponent as usize + 1;
            if digits.len() <= whole {
                out.extend_from_slice(digits.as_bytes());
                out.extend(std::iter::repeat_n(b'0', whole - digits.len()));
                out.extend_from_slice(b".0");
            } else {
                out.extend_from_slice(&digits.as_bytes()[..whole]);
                out.push(b'.');
                out.extend_from_slice(&digits.as_bytes()[whole..]);
            }
        }
    } else {
        out.push(digits.as_bytes()[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits.as_bytes()[1..]);
        }
        out.push(b'e');
        if exponent > 0 {
            out.push(b'+');
            if exponent < 10 {
                out.push(b'0');
            }
        }
        out.extend_from_slice(exponent.to_string().as_bytes());
    }
    Some(())
}

pub(crate) fn put_long(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    put_u64(out, value.unsigned_abs());
}

fn double_item(r: &mut Reader<'_>, out: &mut Vec<u8>) -> Option<()> {
    let value = r.double()?;
    put_double(out, value, &mut String::new())
}

fn long_item(r: &mut Reader<'_>, out: &mut Vec<u8>) -> Option<()> {
    put_long(out, r.long()?);
    Some(())
}

/// The JSON of a Quote payload written with `header`; None when the payload
/// has another header or anything this does not read exactly as Python would.
pub fn quote_json(header: &[u8], payload: &[u8]) -> Option<Decoded> {
    let body = payload.strip_prefix(header)?;
    let mut r = Reader { buf: body, pos: 0 };
    let mut out = Vec::with_capacity(800);
    let mut scratch = String::new();
    let mut code = None;
    let mut market = None;
    let mut exchange_ts = None;
    out.push(b'{');
    for (index, (name, kind)) in QUOTE_FIELDS.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.push(b'"'); // the field names are plain ASCII: nothing to escape
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        match *kind {
            "string" => {
                let text = r.string()?;
                if *name == "code" {
                    code = Some(text.to_owned());
                }
                put_string(&mut out, text);
            }
            "long" => {
                let value = r.long()?;
                if *name == "exchange_ts" {
                    exchange_ts = Some(value);
                }
                put_long(&mut out, value);
            }
            "double" => put_double(&mut out, r.double()?, &mut scratch)?,
            "boolean" => out.extend_from_slice(if r.boolean()? { b"true" } else { b"false" }),
            "array:double" => r.array(&mut out, double_item)?,
            "array:long" => r.array(&mut out, long_item)?,
            _ => {
                let symbols = kind.strip_prefix("enum:")?;
                let index = usize::try_from(r.long()?).ok()?;
                let symbol = symbols.split(',').nth(index)?;
                if *name == "market" {
                    market = Some(symbol);
                }
                put_string(&mut out, symbol);
            }
        }
    }
    out.push(b'}');
    if r.pos != body.len() {
        return None; // trailing bytes: not a record this writer made
    }
    Some(Decoded {
        code: code?,
        market: market?,
        exchange_ts: exchange_ts?,
        json: out,
    })
}
