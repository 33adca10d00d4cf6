use proptest::prelude::*;

use super::*;

fn sample(compression: Compression) -> Vec<u8> {
    let mut b = BatchBuilder::new(compression);
    b.push(1_000, Some(b"k1"), Some(b"v1"))
        .push(1_005, None, Some(b"no key"))
        .push(999, Some(b"tomb"), None);
    b.push_record(NewRecord {
        offset_delta: 3,
        timestamp: 1_010,
        key: Some(b"h".to_vec()),
        value: Some(b"with headers".to_vec()),
        headers: vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), None)],
    });
    b.build().unwrap()
}

#[test]
fn built_batches_validate_and_iterate_for_every_codec() {
    for codec in Compression::ALL {
        let batch = sample(codec);
        let header = validate_batch(&batch).unwrap();
        assert_eq!(header.records_count, 4);
        assert_eq!(header.last_offset_delta, 3);
        assert_eq!(header.max_timestamp, 1_010);
        assert_eq!(header.base_timestamp, 1_000);
        assert_eq!(header.compression().unwrap(), codec);
        let summary = validate_records(&batch, 1 << 20).unwrap();
        assert!(summary.dense_offsets);
        assert!(summary.has_null_key);
        assert_eq!(summary.max_timestamp, 1_010);
        let records = Records::decode(&batch, 1 << 20).unwrap();
        let all: Vec<_> = records.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].key, Some(&b"k1"[..]));
        assert_eq!(all[1].key, None);
        assert_eq!(all[2].value, None);
        assert_eq!(all[2].timestamp(&header), 999);
        let headers: Vec<_> = all[3].headers().collect();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].key, b"a");
        assert_eq!(headers[0].value, Some(&b"1"[..]));
        assert_eq!(headers[1].value, None);
    }
}

#[test]
fn base_offset_and_epoch_patch_without_touching_crc() {
    let mut batch = sample(Compression::None);
    let crc_before = validate_batch(&batch).unwrap().crc;
    set_base_offset(&mut batch, 1_234_567);
    set_partition_leader_epoch(&mut batch, 9);
    let header = validate_batch(&batch).unwrap();
    assert_eq!(header.base_offset, 1_234_567);
    assert_eq!(header.partition_leader_epoch, 9);
    assert_eq!(header.crc, crc_before);
    assert_eq!(header.last_offset(), 1_234_570);
}

#[test]
fn log_append_time_rewrites_crc_and_timestamps() {
    let mut batch = sample(Compression::Lz4);
    set_max_timestamp(&mut batch, TimestampType::LogAppendTime, 77_000);
    let header = validate_batch(&batch).unwrap();
    assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
    assert_eq!(header.max_timestamp, 77_000);
    let records = Records::decode(&batch, 1 << 20).unwrap();
    for r in records.iter() {
        assert_eq!(r.unwrap().timestamp(&header), 77_000);
    }
    // Setting the same values again changes nothing.
    let before = batch.clone();
    set_max_timestamp(&mut batch, TimestampType::LogAppendTime, 77_000);
    assert_eq!(before, batch);
}

#[test]
fn a_header_patched_apart_from_its_batch_gets_the_same_bytes() {
    let batch = sample(Compression::Gzip);
    let mut whole = batch.clone();
    set_max_timestamp(&mut whole, TimestampType::LogAppendTime, 55_000);
    let mut head = batch[..HEADER_LEN].to_vec();
    set_max_timestamp_parts(
        &mut head,
        &batch[HEADER_LEN..],
        TimestampType::LogAppendTime,
        55_000,
    );
    assert_eq!(head, whole[..HEADER_LEN]);
    let mut joined = head;
    joined.extend_from_slice(&batch[HEADER_LEN..]);
    assert!(validate_batch(&joined).is_ok());
}

#[test]
fn every_single_byte_corruption_in_crc_range_is_caught() {
    let batch = sample(Compression::None);
    for at in 17..batch.len() {
        let mut bad = batch.clone();
        bad[at] ^= 0x5a;
        assert!(
            validate_batch(&bad).is_err(),
            "flip at byte {at} went unnoticed"
        );
    }
}

#[test]
fn typed_errors_for_malformed_input() {
    let batch = sample(Compression::None);
    assert!(matches!(
        validate_batch(&batch[..30]),
        Err(RecordError::Truncated { .. })
    ));
    assert!(matches!(
        validate_batch(&batch[..batch.len() - 1]),
        Err(RecordError::Truncated { .. })
    ));
    let mut longer = batch.clone();
    longer.push(0);
    assert!(matches!(
        validate_batch(&longer),
        Err(RecordError::TrailingBytes { trailing: 1 })
    ));
    let mut magic1 = batch.clone();
    magic1[16] = 1;
    assert!(matches!(
        validate_batch(&magic1),
        Err(RecordError::UnsupportedMagic { magic: 1 })
    ));
    let mut codec = batch.clone();
    codec[22] |= 0x07;
    let crc = compute_crc(&codec);
    codec[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        validate_batch(&codec),
        Err(RecordError::UnknownCompression { codec: 7 })
    ));
    let mut short_len = batch.clone();
    short_len[8..12].copy_from_slice(&10i32.to_be_bytes());
    assert!(matches!(
        validate_batch(&short_len),
        Err(RecordError::InvalidBatchLength { .. })
    ));
}

#[test]
fn record_count_is_checked_against_records_present() {
    let mut batch = sample(Compression::Gzip);
    batch[57..61].copy_from_slice(&3i32.to_be_bytes());
    let crc = compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(validate_batch(&batch).is_ok(), "structure alone is fine");
    assert!(matches!(
        validate_records(&batch, 1 << 20),
        Err(RecordError::TrailingBytes { .. })
    ));

    let mut batch = sample(Compression::None);
    // Claim one more record than present, and a larger last offset delta to stay consistent.
    batch[23..27].copy_from_slice(&4i32.to_be_bytes());
    batch[57..61].copy_from_slice(&5i32.to_be_bytes());
    let crc = compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        validate_records(&batch, 1 << 20),
        Err(RecordError::RecordCountMismatch {
            declared: 5,
            actual: 4
        })
    ));
}

#[test]
fn split_batches_reports_partial_tail() {
    let a = sample(Compression::None);
    let b = sample(Compression::Zstd);
    let mut buf = a.clone();
    buf.extend_from_slice(&b);
    let parts: Vec<_> = split_batches(&buf).collect::<Result<_, _>>().unwrap();
    assert_eq!(parts, vec![&a[..], &b[..]]);
    let partial: Vec<_> = split_batches(&buf[..buf.len() - 3]).collect();
    assert_eq!(partial.len(), 2);
    assert!(partial[1].is_err());
    assert_eq!(next_batch_len(&buf[..5]).unwrap(), None);
}

fn arb_record() -> impl Strategy<Value = NewRecord> {
    (
        -1_000_000i64..1_000_000,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..10),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..10)),
            ),
            0..3,
        ),
    )
        .prop_map(|(ts, key, value, headers)| NewRecord {
            offset_delta: 0,
            timestamp: 1_700_000_000_000 + ts,
            key,
            value,
            headers,
        })
}

fn arb_codec() -> impl Strategy<Value = Compression> {
    prop::sample::select(Compression::ALL.to_vec())
}

proptest! {
    #[test]
    fn build_then_decode_round_trips(
        records in proptest::collection::vec(arb_record(), 1..30),
        codec in arb_codec(),
        base_offset in 0i64..1 << 40,
    ) {
        let mut builder = BatchBuilder::new(codec);
        builder.base_offset = base_offset;
        for (i, mut r) in records.clone().into_iter().enumerate() {
            r.offset_delta = i as i32;
            builder.push_record(r);
        }
        let batch = builder.build()?;
        let header = validate_batch(&batch)?;
        prop_assert_eq!(header.base_offset, base_offset);
        prop_assert_eq!(header.records_count as usize, records.len());
        let decoded = Records::decode(&batch, 1 << 24)?;
        let mut n = 0;
        for (i, r) in decoded.iter().enumerate() {
            let r = r?;
            let mut expected = records[i].clone();
            expected.offset_delta = i as i32;
            prop_assert_eq!(r.to_new_record(&header), expected);
            prop_assert_eq!(r.offset(&header), base_offset + i as i64);
            n += 1;
        }
        prop_assert_eq!(n, records.len());
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz_decode(&data);
    }

    #[test]
    fn decoders_never_panic_on_mutated_batches(
        records in proptest::collection::vec(arb_record(), 1..5),
        codec in arb_codec(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        fix_crc: bool,
    ) {
        let mut builder = BatchBuilder::new(codec);
        for (i, mut r) in records.into_iter().enumerate() {
            r.offset_delta = i as i32;
            builder.push_record(r);
        }
        let mut batch = builder.build()?;
        for (at, byte) in flips {
            let at = at.index(batch.len());
            batch[at] = byte;
        }
        if fix_crc && batch.len() > HEADER_LEN {
            let crc = compute_crc(&batch);
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        fuzz_decode(&batch);
    }
}

#[test]
fn legacy_messages_are_recognised() {
    // A magic 1 message: offset, size, crc, magic, attributes, timestamp, key -1, value "hi".
    let mut body = vec![1u8, 0];
    body.extend_from_slice(&5i64.to_be_bytes());
    body.extend_from_slice(&(-1i32).to_be_bytes());
    body.extend_from_slice(&2i32.to_be_bytes());
    body.extend_from_slice(b"hi");
    let mut crc = flate2::Crc::new();
    crc.update(&body);
    let mut msg = 0i64.to_be_bytes().to_vec();
    msg.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    msg.extend_from_slice(&crc.sum().to_be_bytes());
    msg.extend_from_slice(&body);
    assert!(is_legacy_message(&msg));
    assert!(matches!(
        validate_batch(&msg),
        Err(RecordError::UnsupportedMagic { magic: 1 })
    ));
    let mut damaged = msg.clone();
    damaged[25] ^= 1;
    assert!(!is_legacy_message(&damaged));
    assert!(
        !is_legacy_message(&[0u8; 64]),
        "zeros are a torn tail, not an old format"
    );
    assert!(!is_legacy_message(&sample(Compression::None)));
}
