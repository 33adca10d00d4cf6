//! Kafka's zig-zag variable-length integers (protobuf style), as used inside records.

use crate::RecordError;

/// Reads a zig-zag varint of at most 5 bytes (an `int32`) from the front of `buf`.
pub fn read_varint(buf: &mut &[u8]) -> Result<i32, RecordError> {
    let raw = read_unsigned(buf, 5)?;
    let raw = u32::try_from(raw).map_err(|_| RecordError::MalformedVarint)?;
    Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

/// Reads a zig-zag varlong of at most 10 bytes (an `int64`) from the front of `buf`.
pub fn read_varlong(buf: &mut &[u8]) -> Result<i64, RecordError> {
    let raw = read_unsigned(buf, 10)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

fn read_unsigned(buf: &mut &[u8], max_bytes: usize) -> Result<u64, RecordError> {
    let mut value: u64 = 0;
    for i in 0..max_bytes {
        let Some((&byte, rest)) = buf.split_first() else {
            return Err(RecordError::MalformedVarint);
        };
        *buf = rest;
        let bits = u64::from(byte & 0x7f);
        // The 10th byte of a varlong may carry only the top bit of a u64.
        if i == 9 && bits > 1 {
            return Err(RecordError::MalformedVarint);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(RecordError::MalformedVarint)
}

/// Appends `value` as a zig-zag varint.
pub fn write_varint(out: &mut Vec<u8>, value: i32) {
    write_unsigned(out, u64::from(((value << 1) ^ (value >> 31)) as u32));
}

/// Appends `value` as a zig-zag varlong.
pub fn write_varlong(out: &mut Vec<u8>, value: i64) {
    write_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn write_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The encoded size of `value` as a zig-zag varint.
pub fn varint_len(value: i32) -> usize {
    unsigned_len(u64::from(((value << 1) ^ (value >> 31)) as u32))
}

/// The encoded size of `value` as a zig-zag varlong.
pub fn varlong_len(value: i64) -> usize {
    unsigned_len(((value << 1) ^ (value >> 63)) as u64)
}

fn unsigned_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let mut out = Vec::new();
        write_varint(&mut out, 0);
        write_varint(&mut out, -1);
        write_varint(&mut out, 1);
        write_varint(&mut out, 300);
        assert_eq!(out, [0x00, 0x01, 0x02, 0xd8, 0x04]);
    }

    #[test]
    fn overlong_varint_is_rejected() {
        let mut buf: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_varint(&mut buf), Err(RecordError::MalformedVarint));
        let mut buf: &[u8] = &[0x80];
        assert_eq!(read_varint(&mut buf), Err(RecordError::MalformedVarint));
        let mut buf: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0x1f];
        assert_eq!(read_varint(&mut buf), Err(RecordError::MalformedVarint));
    }

    proptest! {
        #[test]
        fn varint_round_trips(v: i32) {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            let mut buf = out.as_slice();
            prop_assert_eq!(read_varint(&mut buf)?, v);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn varlong_round_trips(v: i64) {
            let mut out = Vec::new();
            write_varlong(&mut out, v);
            prop_assert_eq!(out.len(), varlong_len(v));
            let mut buf = out.as_slice();
            prop_assert_eq!(read_varlong(&mut buf)?, v);
            prop_assert!(buf.is_empty());
        }
    }
}
