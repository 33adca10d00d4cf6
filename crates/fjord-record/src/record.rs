//! Records inside a batch: decoding (after decompression) and iteration without copying.

use std::borrow::Cow;

use crate::batch::{BatchHeader, HEADER_LEN};
use crate::varint::{read_varint, read_varlong};
use crate::{Compression, RecordError};

/// The records section of one batch, decompressed when the batch is compressed.
#[derive(Debug)]
pub struct Records<'a> {
    data: Cow<'a, [u8]>,
    declared: i32,
}

impl<'a> Records<'a> {
    /// Decodes the records section of `batch`, decompressing at most `limit` bytes.
    pub fn decode(batch: &'a [u8], limit: usize) -> Result<Self, RecordError> {
        let header = BatchHeader::parse(batch)?;
        let end = header.total_len().min(batch.len());
        let body = &batch[HEADER_LEN..end];
        let data = match header.compression()? {
            Compression::None => Cow::Borrowed(body),
            codec => Cow::Owned(codec.decompress(body, limit)?),
        };
        Ok(Self {
            data,
            declared: header.records_count,
        })
    }

    /// The uncompressed records bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Iterates the records; an error ends the iteration. Trailing bytes after the declared
    /// number of records are reported as an error too.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter {
            rest: &self.data,
            index: 0,
            declared: self.declared,
            failed: false,
        }
    }
}

/// Iterator over the records of a [`Records`].
#[derive(Debug)]
pub struct RecordIter<'a> {
    rest: &'a [u8],
    index: i32,
    declared: i32,
    failed: bool,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.index >= self.declared {
            if self.rest.is_empty() {
                return None;
            }
            self.failed = true;
            return Some(Err(RecordError::TrailingBytes {
                trailing: self.rest.len(),
            }));
        }
        if self.rest.is_empty() {
            self.failed = true;
            return Some(Err(RecordError::RecordCountMismatch {
                declared: self.declared,
                actual: self.index,
            }));
        }
        let result = Record::parse(&mut self.rest, self.index);
        if result.is_err() {
            self.failed = true;
        }
        self.index += 1;
        Some(result)
    }
}

/// One record, borrowing from the (decompressed) records section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    headers_raw: &'a [u8],
    header_count: i32,
}

/// One record header; the key is never null, the value may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

impl<'a> Record<'a> {
    fn parse(buf: &mut &'a [u8], index: i32) -> Result<Self, RecordError> {
        let bad = |reason| RecordError::InvalidRecord { index, reason };
        let length = read_varint(buf)?;
        let length = usize::try_from(length).map_err(|_| bad("negative record length"))?;
        if buf.len() < length {
            return Err(bad("record length runs past the batch"));
        }
        let (mut body, rest) = buf.split_at(length);
        *buf = rest;
        let Some((&attributes, tail)) = body.split_first() else {
            return Err(bad("empty record"));
        };
        body = tail;
        let timestamp_delta = read_varlong(&mut body)?;
        let offset_delta = read_varint(&mut body)?;
        let key = read_bytes(&mut body).map_err(|_| bad("bad key length"))?;
        let value = read_bytes(&mut body).map_err(|_| bad("bad value length"))?;
        let header_count = read_varint(&mut body)?;
        if header_count < 0 {
            return Err(bad("negative header count"));
        }
        let headers_raw = body;
        // Walk the headers once now so later iteration cannot fail.
        let mut walk = headers_raw;
        for _ in 0..header_count {
            match read_bytes(&mut walk) {
                Ok(Some(_)) => {}
                _ => return Err(bad("bad header key")),
            }
            read_bytes(&mut walk).map_err(|_| bad("bad header value"))?;
        }
        if !walk.is_empty() {
            return Err(bad("record length does not match its fields"));
        }
        Ok(Self {
            attributes: attributes as i8,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers_raw,
            header_count,
        })
    }

    pub fn header_count(&self) -> usize {
        self.header_count as usize
    }

    /// The record's headers, in order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'a>> + 'a {
        let mut rest = self.headers_raw;
        let mut left = self.header_count;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            // Validated in `parse`; a failure here would be a bug in this module.
            let key = read_bytes(&mut rest).ok().flatten().unwrap_or_default();
            let value = read_bytes(&mut rest).ok().flatten();
            Some(Header { key, value })
        })
    }
}

/// Reads a varint length and that many bytes; length -1 means null.
fn read_bytes<'a>(buf: &mut &'a [u8]) -> Result<Option<&'a [u8]>, RecordError> {
    let len = read_varint(buf)?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| RecordError::MalformedVarint)?;
    if buf.len() < len {
        return Err(RecordError::Truncated {
            needed: len,
            available: buf.len(),
        });
    }
    let (bytes, rest) = buf.split_at(len);
    *buf = rest;
    Ok(Some(bytes))
}
