//! Kafka's binary encoding of coordinator records in their non-flexible versions: big-endian
//! integers, strings with an int16 length (-1: null), bytes with an int32 length, arrays with
//! an int32 count (-1: null). Keys and values start with an int16: the record type for keys,
//! the schema version for values.

/// Builds one key or value.
#[derive(Debug)]
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    /// Starts with the record type (a key) or the schema version (a value).
    pub fn new(version: i16) -> Self {
        let mut w = Self(Vec::with_capacity(64));
        w.i16(version);
        w
    }

    pub fn i8(&mut self, v: i8) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A string; longer than an int16 can count is cut at a character boundary (Kafka's
    /// own limits keep ids and metadata far below it).
    pub fn string(&mut self, s: &str) -> &mut Self {
        let mut end = s.len().min(i16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.i16(end as i16);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
        self
    }

    pub fn nullable_string(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.string(s),
            None => self.i16(-1),
        }
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.i32(b.len() as i32);
        self.0.extend_from_slice(b);
        self
    }

    /// An unsigned varint (flexible versions' lengths, counts and tags).
    pub fn uvarint(&mut self, mut v: u32) -> &mut Self {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }

    /// A flexible version's string: its length plus one as a varint, then the bytes.
    pub fn compact_string(&mut self, s: &str) -> &mut Self {
        self.uvarint(s.len() as u32 + 1);
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    /// Bytes as they are (a UUID).
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// An array's count (`None`: a null array).
    pub fn count(&mut self, n: Option<usize>) -> &mut Self {
        self.i32(n.map_or(-1, |n| n as i32))
    }

    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads one key or value.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("record ends at byte {} of {}", self.buf.len(), self.pos + n))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn i8(&mut self) -> Result<i8, String> {
        Ok(i8::from_be_bytes([self.take(1)?[0]]))
    }

    pub fn i16(&mut self) -> Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i64(&mut self) -> Result<i64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub fn nullable_string(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let b = self.take(len as usize)?;
        String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| "a string is not UTF-8".to_string())
    }

    pub fn string(&mut self) -> Result<String, String> {
        self.nullable_string()?
            .ok_or_else(|| "a null string where one is required".to_string())
    }

    pub fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let len = self.i32()?;
        if len < 0 {
            return Err("null bytes where they are required".into());
        }
        Ok(self.take(len as usize)?.to_vec())
    }

    pub fn uvarint(&mut self) -> Result<u32, String> {
        let mut v: u32 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.take(1)?[0];
            v |= u32::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint longer than five bytes".into())
    }

    /// A flexible version's (non-null) string.
    pub fn compact_string(&mut self) -> Result<String, String> {
        let n = self.uvarint()?;
        if n == 0 {
            return Err("a null string where one is required".into());
        }
        let b = self.take(n as usize - 1)?;
        String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
    }

    /// A flexible version's tagged fields: `f(tag, data)` for each.
    pub fn tagged_fields(&mut self, mut f: impl FnMut(u32, &[u8])) -> Result<(), String> {
        let n = self.uvarint()?;
        for _ in 0..n {
            let tag = self.uvarint()?;
            let len = self.uvarint()? as usize;
            f(tag, self.take(len)?);
        }
        Ok(())
    }

    /// An array's count (`None`: null); never more than the bytes left could hold.
    pub fn count(&mut self) -> Result<Option<usize>, String> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(None);
        }
        let n = n as usize;
        if n > self.buf.len() - self.pos {
            return Err(format!(
                "an array claims {n} entries in {} bytes",
                self.buf.len() - self.pos
            ));
        }
        Ok(Some(n))
    }

    /// Everything was read (a longer record is a version this build does not know).
    pub fn done(&self) -> Result<(), String> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(format!("{} bytes left over", self.buf.len() - self.pos))
        }
    }
}
