//! The four codecs a RecordBatch may use, as Kafka frames them on the wire.
//!
//! - gzip: an RFC 1952 stream.
//! - snappy: Kafka's Java client writes xerial's framing (a magic header, then length-prefixed
//!   snappy blocks); librdkafka may write one raw snappy block. Both are read; xerial is written.
//! - lz4: the LZ4 frame format with independent 64 KiB blocks (what Kafka's Java reader accepts).
//! - zstd: a standard zstd frame.
//!
//! Every decompressor is bounded: output beyond `limit` bytes is an error, not an allocation.

use std::io::{Read, Write};

use crate::RecordError;

/// The compression codec in bits 0–2 of a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec for attribute bits 0–2.
    pub fn from_id(id: u8) -> Result<Self, RecordError> {
        Ok(match id {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            codec => return Err(RecordError::UnknownCompression { codec }),
        })
    }

    pub fn id(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }

    /// Kafka's name for the codec, as used by `compression.type`.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }

    /// Compresses `data` into a new buffer framed as Kafka clients expect.
    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>, RecordError> {
        let fail = |reason: std::io::Error| RecordError::Compression {
            codec: self.name(),
            reason: reason.to_string(),
        };
        match self {
            Self::None => Ok(data.to_vec()),
            Self::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(data).map_err(fail)?;
                enc.finish().map_err(fail)
            }
            Self::Snappy => xerial_compress(data),
            Self::Lz4 => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent);
                let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
                enc.write_all(data).map_err(fail)?;
                enc.finish().map_err(|e| RecordError::Compression {
                    codec: "lz4",
                    reason: e.to_string(),
                })
            }
            Self::Zstd => zstd::bulk::compress(data, 3).map_err(fail),
        }
    }

    /// Decompresses `data`, failing if the output would exceed `limit` bytes.
    pub fn decompress(self, data: &[u8], limit: usize) -> Result<Vec<u8>, RecordError> {
        match self {
            Self::None => {
                if data.len() > limit {
                    return Err(RecordError::DecompressedTooLarge { limit });
                }
                Ok(data.to_vec())
            }
            Self::Gzip => read_bounded(self, flate2::read::GzDecoder::new(data), limit),
            Self::Snappy => snappy_decompress(data, limit),
            Self::Lz4 => read_bounded(self, lz4_flex::frame::FrameDecoder::new(data), limit),
            Self::Zstd => {
                let dec = zstd::stream::read::Decoder::with_buffer(data).map_err(|e| {
                    RecordError::Decompression {
                        codec: "zstd",
                        reason: e.to_string(),
                    }
                })?;
                read_bounded(self, dec, limit)
            }
        }
    }
}

fn read_bounded(
    codec: Compression,
    reader: impl Read,
    limit: usize,
) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::new();
    // Read one byte past the limit so "exactly at the limit" and "over it" differ.
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| RecordError::Decompression {
            codec: codec.name(),
            reason: e.to_string(),
        })?;
    if out.len() > limit {
        return Err(RecordError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
const XERIAL_BLOCK: usize = 32 * 1024;

fn xerial_compress(data: &[u8]) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_LEN + data.len() / 2 + 64);
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&1i32.to_be_bytes()); // version
    out.extend_from_slice(&1i32.to_be_bytes()); // minimum compatible version
    let mut enc = snap::raw::Encoder::new();
    for chunk in data.chunks(XERIAL_BLOCK) {
        let block = enc
            .compress_vec(chunk)
            .map_err(|e| RecordError::Compression {
                codec: "snappy",
                reason: e.to_string(),
            })?;
        let len = i32::try_from(block.len()).map_err(|_| RecordError::Compression {
            codec: "snappy",
            reason: "block too large".into(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&block);
    }
    Ok(out)
}

fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, RecordError> {
    let fail = |reason: String| RecordError::Decompression {
        codec: "snappy",
        reason,
    };
    let mut dec = snap::raw::Decoder::new();
    let mut out = Vec::new();
    let mut append_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), RecordError> {
        let len = snap::raw::decompress_len(block).map_err(|e| fail(e.to_string()))?;
        if out.len().saturating_add(len) > limit {
            return Err(RecordError::DecompressedTooLarge { limit });
        }
        let start = out.len();
        out.resize(start + len, 0);
        dec.decompress(block, &mut out[start..])
            .map_err(|e| fail(e.to_string()))?;
        Ok(())
    };
    if data.len() >= XERIAL_HEADER_LEN && data[..8] == XERIAL_MAGIC {
        let mut rest = &data[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            let Some((len_bytes, tail)) = rest.split_first_chunk::<4>() else {
                return Err(fail("truncated xerial block length".into()));
            };
            let len = usize::try_from(i32::from_be_bytes(*len_bytes))
                .map_err(|_| fail("negative xerial block length".into()))?;
            if tail.len() < len {
                return Err(fail("truncated xerial block".into()));
            }
            append_block(&tail[..len], &mut out)?;
            rest = &tail[len..];
        }
    } else {
        append_block(data, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_codec_round_trips(data in proptest::collection::vec(any::<u8>(), 0..100_000)) {
            for codec in Compression::ALL {
                let packed = codec.compress(&data)?;
                prop_assert_eq!(&codec.decompress(&packed, data.len())?, &data);
            }
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let data = vec![7u8; 1 << 20];
        for codec in Compression::ALL {
            let packed = codec.compress(&data).unwrap();
            assert_eq!(
                codec.decompress(&packed, 1000),
                Err(RecordError::DecompressedTooLarge { limit: 1000 }),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn raw_snappy_is_read_too() {
        let data = b"librdkafka writes one raw snappy block".repeat(10);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(Compression::Snappy.decompress(&raw, 1 << 20).unwrap(), data);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(
                codec
                    .decompress(b"definitely not compressed", 1 << 20)
                    .is_err()
            );
        }
    }
}
