//! Responses on their way to the socket: encoded bytes, with record data that stays in the
//! segment files until it is sent (`sendfile`) spliced in between.
//!
//! A Fetch response is mostly record batches, already in the wire format on disk. Copying them
//! into memory and then into an encoded response costs two copies, a zero-fill and fresh pages
//! per response; sending them from the page cache costs none. The response is still encoded by
//! `kafka-protocol`: it is encoded twice with each file-backed partition's records set to null
//! and to empty. The two encodings differ exactly at those records' length fields, which gives
//! their positions, so the frame is the first encoding cut there, with each length set to the
//! file region's and the region sent in between.

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use fjord_log::FetchSlice;
use kafka_protocol::messages::FetchResponse;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

/// One response, ready to write: `head`, then each file region followed by its bytes.
#[derive(Debug)]
pub struct Frame {
    head: Bytes,
    regions: Vec<(FetchSlice, Bytes)>,
}

impl From<BytesMut> for Frame {
    fn from(head: BytesMut) -> Self {
        Self {
            head: head.freeze(),
            regions: Vec::new(),
        }
    }
}

/// A file-backed partition of a Fetch response: where it is in the response (topic, partition)
/// and the segment range holding its records.
pub type Region = ((usize, usize), FetchSlice);

impl Frame {
    /// Builds the frame of a Fetch response whose `regions` (in response order) send their
    /// records from the segment files. `encode` encodes a whole response with its size prefix
    /// and header.
    pub fn fetch(
        version: i16,
        mut response: FetchResponse,
        regions: Vec<Region>,
        encode: impl Fn(&FetchResponse) -> Result<BytesMut, String>,
    ) -> Result<Self, String> {
        set_records(&mut response, &regions, None)?;
        let nulls = encode(&response)?;
        if regions.is_empty() {
            return Ok(nulls.into());
        }
        set_records(&mut response, &regions, Some(Bytes::new()))?;
        let empties = encode(&response)?;
        // A null and an empty records field have the same width: 1 byte (compact, v12+) or
        // 4 bytes (i32); every byte of it differs between the two.
        let width = if version >= 12 { 1 } else { 4 };
        if nulls.len() != empties.len() {
            return Err("null and empty records encode to different sizes".to_string());
        }
        let mut cuts = Vec::with_capacity(regions.len());
        let mut i = 0;
        while i < nulls.len() {
            if nulls[i] != empties[i] {
                cuts.push(i);
                i += width;
            } else {
                i += 1;
            }
        }
        if cuts.len() != regions.len() {
            return Err(format!(
                "found {} records fields for {} file regions",
                cuts.len(),
                regions.len()
            ));
        }
        // The bytes between the cuts, each ending with the next region's length.
        let mut pieces: Vec<BytesMut> = Vec::with_capacity(cuts.len() + 1);
        let mut from = 0;
        for (cut, (_, slice)) in cuts.iter().zip(&regions) {
            let mut piece = BytesMut::with_capacity(cut - from + 10);
            piece.extend_from_slice(&nulls[from..*cut]);
            if version >= 12 {
                put_unsigned_varint(&mut piece, slice.len + 1);
            } else {
                let len = i32::try_from(slice.len).map_err(|_| "records over 2 GiB")?;
                piece.put_i32(len);
            }
            pieces.push(piece);
            from = cut + width;
        }
        pieces.push(BytesMut::from(&nulls[from..]));
        let total = pieces.iter().map(|p| p.len() as u64).sum::<u64>()
            + regions.iter().map(|(_, r)| r.len).sum::<u64>()
            - 4;
        let size = i32::try_from(total).map_err(|_| "response over 2 GiB")?;
        let mut pieces = pieces.into_iter();
        let mut head = pieces.next().expect("one piece per cut and one after");
        head[..4].copy_from_slice(&size.to_be_bytes());
        Ok(Self {
            head: head.freeze(),
            regions: regions
                .into_iter()
                .map(|(_, slice)| slice)
                .zip(pieces.map(BytesMut::freeze))
                .collect(),
        })
    }

    /// Writes the frame and hands the connection back. File regions go out with `sendfile`
    /// from the page cache, on a blocking thread because pages not in memory are read from
    /// disk first; files without a descriptor are read into memory.
    pub async fn write(self, mut out: OwnedWriteHalf) -> io::Result<OwnedWriteHalf> {
        out.write_all(&self.head).await?;
        for (region, after) in self.regions {
            out = send_region(out, region).await?;
            out.write_all(&after).await?;
        }
        Ok(out)
    }
}

fn set_records(
    response: &mut FetchResponse,
    regions: &[Region],
    records: Option<Bytes>,
) -> Result<(), String> {
    for ((t, p), _) in regions {
        let partition = response
            .responses
            .get_mut(*t)
            .and_then(|t| t.partitions.get_mut(*p))
            .ok_or("a fetched region names no partition of the response")?;
        partition.records = records.clone();
    }
    Ok(())
}

fn put_unsigned_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

async fn send_region(mut out: OwnedWriteHalf, region: FetchSlice) -> io::Result<OwnedWriteHalf> {
    if region.file.fd().is_none() {
        out.write_all(&region.read()?).await?;
        return Ok(out);
    }
    let mut pos = region.position;
    let end = region.position + region.len;
    while pos < end {
        AsRef::<TcpStream>::as_ref(&out).writable().await?;
        let file = region.file.clone();
        let (back, sent) = tokio::task::spawn_blocking(move || {
            let mut at = pos;
            let chunk = (end - at).min(1 << 30) as usize;
            let stream: &TcpStream = out.as_ref();
            // Through try_io, so a full socket buffer clears tokio's readiness and the next
            // `writable()` waits for room.
            let sent = stream.try_io(Interest::WRITABLE, || {
                let fd = file
                    .fd()
                    .ok_or_else(|| io::Error::other("descriptor gone"))?;
                Ok(rustix::fs::sendfile(stream, fd, Some(&mut at), chunk)?)
            });
            (out, sent.map(|n| (n, at)))
        })
        .await
        .map_err(io::Error::other)?;
        out = back;
        match sent {
            Ok((0, _)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the segment file ended inside a fetched range (truncated while sending)",
                ));
            }
            Ok((_, at)) => pos = at,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fjord_log::{FsStorage, Storage};
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, FetchableTopicResponse, PartitionData,
    };
    use kafka_protocol::messages::{ProducerId, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;

    /// Bytes on the wire, the size prefix included.
    fn wire_len(frame: &Frame) -> u64 {
        frame.head.len() as u64
            + frame
                .regions
                .iter()
                .map(|(r, after)| r.len + after.len() as u64)
                .sum::<u64>()
    }

    /// The whole frame in memory, regions read from their files.
    fn wire_bytes(frame: &Frame) -> Vec<u8> {
        let mut v = frame.head.to_vec();
        for (region, after) in &frame.regions {
            v.extend_from_slice(&region.read().expect("read region"));
            v.extend_from_slice(after);
        }
        v
    }

    fn encode(version: i16, r: &FetchResponse) -> Result<BytesMut, String> {
        let mut out = BytesMut::new();
        out.put_i32(0);
        let mut header = ResponseHeader::default();
        header.correlation_id = 7;
        let header_version = if version >= 12 { 1 } else { 0 };
        header
            .encode(&mut out, header_version)
            .map_err(|e| e.to_string())?;
        r.encode(&mut out, version).map_err(|e| e.to_string())?;
        let len = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }

    #[test]
    fn spliced_frames_are_byte_for_byte_the_encoded_response_at_every_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("segment.log");
        let file = FsStorage.open(&path, true).expect("open");
        // Sizes around the varint boundaries of a compact length (127, 16383).
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        file.write_at(&data, 0).expect("write");
        let ranges = [
            (0u64, 126u64),
            (1_000, 127),
            (5_000, 16_383),
            (40_000, 200_000),
        ];
        let slice = |(position, len): (u64, u64)| FetchSlice {
            file: Arc::clone(&file),
            position,
            len,
            first_offset: 0,
            next_offset: 1,
            records: 1,
        };
        for version in 4..=17i16 {
            let mut response = FetchResponse::default();
            response.throttle_time_ms = 3;
            let mut regions = Vec::new();
            for t in 0..2usize {
                let mut topic = FetchableTopicResponse::default();
                if version < 13 {
                    topic.topic = TopicName(StrBytes::from_string(format!("topic-{t}")));
                }
                topic.topic_id = uuid::Uuid::from_u128(t as u128 + 1);
                for p in 0..5usize {
                    let mut pd = PartitionData::default();
                    pd.partition_index = p as i32;
                    pd.high_watermark = 1_000 + p as i64;
                    pd.last_stable_offset = 900;
                    pd.log_start_offset = 3;
                    pd.preferred_read_replica = kafka_protocol::messages::BrokerId(-1);
                    if p == 1 {
                        let mut a = AbortedTransaction::default();
                        a.producer_id = ProducerId(42);
                        a.first_offset = 17;
                        pd.aborted_transactions = Some(vec![a]);
                    }
                    if p == 2 {
                        pd.records = Some(Bytes::from_static(b"in memory"));
                    } else if p == 3 && t == 0 {
                        pd.error_code = 1;
                    } else {
                        regions.push(((t, p), slice(ranges[(t * 5 + p) % ranges.len()])));
                    }
                    topic.partitions.push(pd);
                }
                response.responses.push(topic);
            }
            // What the client must receive: the response with the file bytes inside.
            let mut expected = response.clone();
            for ((t, p), s) in &regions {
                expected.responses[*t].partitions[*p].records =
                    Some(Bytes::from(s.read().expect("read")));
            }
            let expected = encode(version, &expected).expect("encode");
            let frame =
                Frame::fetch(version, response, regions, |r| encode(version, r)).expect("frame");
            assert_eq!(wire_len(&frame), expected.len() as u64, "v{version}");
            assert!(
                wire_bytes(&frame) == expected[..],
                "v{version}: spliced frame differs from the encoded response"
            );
        }
    }

    #[test]
    fn a_frame_without_regions_is_the_plain_encoding() {
        let response = FetchResponse::default();
        let frame =
            Frame::fetch(12, response.clone(), Vec::new(), |r| encode(12, r)).expect("frame");
        assert_eq!(
            wire_bytes(&frame),
            encode(12, &response).expect("encode").to_vec()
        );
    }
}
