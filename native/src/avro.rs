//! Avro binary encoding of the Quote's field types (byte-identical to fastavro
//! and schemas/avro_compiler.py).

/// `int`/`long`: zig-zag, then base-128 varint.
pub fn put_long(buf: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7f {
        buf.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

/// `string` (and `bytes`): the length, then the UTF-8 bytes.
pub fn put_str(buf: &mut Vec<u8>, text: &[u8]) {
    put_long(buf, text.len() as i64);
    buf.extend_from_slice(text);
}

/// `double`: 8 bytes, little-endian IEEE 754.
pub fn put_double(buf: &mut Vec<u8>, value: f64) {
    buf.extend_from_slice(&value.to_le_bytes());
}

/// `boolean`: one byte.
pub fn put_bool(buf: &mut Vec<u8>, value: bool) {
    buf.push(u8::from(value));
}

/// `{"type": "array", "items": "double"}`: one block (count, items), then 0.
pub fn put_doubles(buf: &mut Vec<u8>, values: &[f64]) {
    if !values.is_empty() {
        put_long(buf, values.len() as i64);
        values.iter().for_each(|&v| put_double(buf, v));
    }
    buf.push(0);
}

/// `{"type": "array", "items": "long"}`: one block (count, items), then 0.
pub fn put_longs(buf: &mut Vec<u8>, values: &[i64]) {
    if !values.is_empty() {
        put_long(buf, values.len() as i64);
        values.iter().for_each(|&v| put_long(buf, v));
    }
    buf.push(0);
}
