//! What the network reaches, fuzzed (#12): random and mutated payloads given to the codec
//! never panic, are refused with a reason, and are size-checked before they are parsed.

use chrono::TimeZone;
use proptest::prelude::*;
use record::{
    decode, encode, CodecError, DeviceId, Field, FieldStatus, Receipt, Record, RecordId, Rejection,
    StatusReport, MAX_PAYLOAD_BYTES,
};

fn sample() -> Record {
    let device_id = DeviceId::new("autoref-01").unwrap();
    let at = chrono::Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
    Record {
        record_id: RecordId::derive(&device_id, "00", "autoref_fw2", 1),
        device_id,
        device_type: "autoref".into(),
        template_id: "autoref_fw2".into(),
        template_version: 1,
        firmware: "fw2".into(),
        source_file: "a.png".into(),
        image_sha256: "00".into(),
        patient_id: Some("00482913".into()),
        exam_date: Some("2021-05-13".into()),
        exam_time: Some("10:15".into()),
        fields: vec![Field {
            name: "r_sph".into(),
            number: Some(-1.25),
            value: Some("-1.25".into()),
            unit: Some("D".into()),
            status: FieldStatus::Ok,
            confidence: 0.98,
            reason: None,
            raw: None,
        }],
        review_crops: vec![],
        sample_crops: vec![],
        alignment: None,
        agent_version: "0.1.0".into(),
        model_version: "m1".into(),
        captured_at: at,
        recognized_at: at,
    }
}

/// Every message type the hub decodes from the network; each either decodes or says why not.
fn decode_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    fn one<T: serde::de::DeserializeOwned + record::Versioned>(
        bytes: &[u8],
    ) -> Result<(), TestCaseError> {
        if let Err(e) = decode::<T>(bytes) {
            prop_assert!(!e.to_string().is_empty());
        }
        Ok(())
    }
    one::<Record>(bytes)?;
    one::<Rejection>(bytes)?;
    one::<Receipt>(bytes)?;
    one::<StatusReport>(bytes)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..40))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..50).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match m {
        Mutation::Flip(i, b) if !bytes.is_empty() => {
            let i = at(*i, bytes.len());
            bytes[i] ^= b | 1;
        }
        Mutation::Cut(i) => bytes.truncate(at(*i, bytes.len() + 1)),
        Mutation::Insert(i, v) => {
            let i = at(*i, bytes.len() + 1);
            bytes.splice(i..i, v.iter().copied());
        }
        Mutation::Remove(i, n) if !bytes.is_empty() => {
            let i = at(*i, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes_are_refused_with_a_reason(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        decode_all(&bytes)?;
    }

    #[test]
    fn mutated_records_never_panic(ms in prop::collection::vec(mutation(), 1..6)) {
        let mut bytes = encode(&sample());
        for m in &ms {
            apply(&mut bytes, m);
        }
        decode_all(&bytes)?;
    }
}

#[test]
fn oversize_is_refused_before_parsing_and_deep_nesting_is_an_error() {
    // Not valid JSON at all, but refused for its size first.
    let big = vec![b'{'; MAX_PAYLOAD_BYTES + 1];
    assert!(matches!(
        decode::<Record>(&big),
        Err(CodecError::TooLarge { .. })
    ));
    // Deep nesting within the size limit: serde_json's recursion limit answers, no overflow.
    let deep = "[".repeat(MAX_PAYLOAD_BYTES / 2);
    assert!(matches!(
        decode::<Record>(deep.as_bytes()),
        Err(CodecError::Json(_))
    ));
    let round = decode::<Record>(&encode(&sample())).unwrap();
    assert_eq!(round, sample());
}
