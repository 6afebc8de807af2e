//! Offline receipt verification: check what the server signed using only the receipt, the
//! events and the server's public key, with no server and no `causeway-core`.
//!
//! This is a second, independent implementation of two byte layouts the core defines, so it
//! must agree with the core byte for byte:
//! - an event's canonical record and chain hash (`docs/FORMAT.md`, "Hash"; core's
//!   `codec::encode`): `blake3(prev_hash || [1, 1] || header fields before the hash || payload)`,
//!   little-endian, strings and counts as `u16` length prefixes, metadata sorted by key;
//! - a receipt's canonical bytes, which the Ed25519 signature covers (core's
//!   `Receipt::canonical_bytes`).
//!
//! The unit tests pin both against golden values produced by the core itself, and check that a
//! single changed field, byte, gate or key is caught.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

use crate::pb;

/// The domain tag that opens a receipt's canonical bytes, so a signature over a receipt can
/// never be mistaken for a signature over anything else.
pub const RECEIPT_DOMAIN_TAG: &[u8] = b"causeway.receipt.v1\0";
/// The record format version whose hash this module computes.
pub const RECORD_VERSION: u8 = 1;
/// The record kind of an event.
pub const KIND_EVENT: u8 = 1;
/// Bytes in an event hash, a `prev_hash` and a log digest (blake3).
pub const HASH_BYTES: usize = 32;
/// Bytes in an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;
/// Characters of a receipt's key id an error repeats.
const KEY_ID_SHOWN_CHARS: usize = 64;
/// The largest wall time a timestamp can carry: it packs as `wall_ms << 16 | logical`.
pub use crate::timestamp::WALL_MS_MAX;

/// A blake3 hash.
pub type Hash = [u8; HASH_BYTES];

/// Why a receipt does not verify. The variants mirror the core's `receipt::ReceiptError`, plus
/// [`ReceiptError::Malformed`] for wire values the core's types cannot even hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The receipt and the events do not line up.
    #[error("receipt names {receipt} events but {given} were given")]
    Count {
        /// Events in the receipt.
        receipt: usize,
        /// Events given.
        given: usize,
    },
    /// An event's fields or bytes differ from what the receipt committed to.
    #[error("event {index} does not match the receipt: {detail}")]
    Event {
        /// Which event, from 0.
        index: usize,
        /// What differs.
        detail: String,
    },
    /// A value cannot be what the server sent for a genuine receipt or event: a hash that is not
    /// 32 bytes, an id that is not a UUID, a timestamp out of range, a name over 65,535 bytes.
    #[error("malformed {0}")]
    Malformed(String),
    /// A public key was given but the receipt has no signature.
    #[error("receipt is not signed")]
    Unsigned,
    /// The signature does not verify under the given key.
    #[error("signature does not verify: {0}")]
    BadSignature(String),
}

/// Checks a receipt against the events it names, without a server: every event's id, position,
/// version, timestamp and hash must be the receipt's, and its hash must be what its canonical
/// bytes and the receipt's `prev_hash` hash to. With `public_key`, the Ed25519 signature over
/// [`canonical_bytes`] must verify under it, and the key the receipt names
/// (`signature_key_id`, which the signature does not cover) must be that key's [`key_id`], as
/// the server checks; without, the signature is not looked at (and a forged receipt over
/// genuine events passes), so pass the key whenever you have it.
///
/// ```
/// use causeway_client::{pb, receipt};
/// use ed25519_dalek::{Signer as _, SigningKey};
///
/// // An event as a read returns it, and the receipt of its append, signed. Here this code
/// // plays the server: the hash from `event_hash`, the signature from a key of its own.
/// let mut event = pb::Event {
///     position: 1,
///     version: 1,
///     timestamp: Some(causeway_client::timestamp::hybrid(1_700_000_000_000, 0)),
///     id: "01890a5d-ac96-774b-bcce-b302099a8057".to_string(),
///     correlation_id: "01890a5d-ac96-774b-bcce-b302099a8057".to_string(),
///     scope: "acme".to_string(),
///     entity: "order-7".to_string(),
///     r#type: "OrderPlaced".to_string(),
///     payload: br#"{"total":12}"#.to_vec(),
///     ..pb::Event::default()
/// };
/// let prev_hash = [0; receipt::HASH_BYTES]; // the entity's first event
/// event.hash = receipt::event_hash(&event, &prev_hash)?.to_vec();
/// let mut signed = pb::Receipt {
///     events: vec![pb::Committed {
///         id: event.id.clone(),
///         position: event.position,
///         version: event.version,
///         timestamp: event.timestamp.clone(),
///         hash: event.hash.clone(),
///         prev_hash: prev_hash.to_vec(),
///     }],
///     digest: vec![7; receipt::HASH_BYTES],
///     ..pb::Receipt::default()
/// };
/// let server_key = SigningKey::from_bytes(&[42; 32]);
/// signed.signature = server_key.sign(&receipt::canonical_bytes(&signed)?).to_bytes().to_vec();
/// let public_key = server_key.verifying_key().to_bytes();
/// signed.signature_key_id = receipt::key_id(&public_key);
///
/// receipt::verify(&signed, std::slice::from_ref(&event), Some(&public_key))?;
///
/// // A changed payload no longer hashes to what the receipt committed to.
/// event.payload = br#"{"total":1}"#.to_vec();
/// let refused = receipt::verify(&signed, &[event], Some(&public_key));
/// assert!(matches!(refused, Err(receipt::ReceiptError::Event { index: 0, .. })));
/// # Ok::<(), receipt::ReceiptError>(())
/// ```
pub fn verify(
    receipt: &pb::Receipt,
    events: &[pb::Event],
    public_key: Option<&[u8; 32]>,
) -> Result<(), ReceiptError> {
    if receipt.events.len() != events.len() {
        return Err(ReceiptError::Count {
            receipt: receipt.events.len(),
            given: events.len(),
        });
    }
    for (index, (committed, event)) in receipt.events.iter().zip(events).enumerate() {
        let mismatch = |detail: String| ReceiptError::Event { index, detail };
        let what = |field: &str| format!("receipt event {index} {field}");
        let fields = [
            (
                "id",
                uuid_bytes(&committed.id, &what("id"))? == uuid_bytes(&event.id, &what("id"))?,
            ),
            ("position", committed.position == event.position),
            ("version", committed.version == event.version),
            (
                "timestamp",
                packed_timestamp(committed.timestamp.as_ref(), &what("timestamp"))?
                    == packed_timestamp(event.timestamp.as_ref(), &what("timestamp"))?,
            ),
            ("hash", committed.hash == event.hash),
        ];
        if let Some((field, _)) = fields.iter().find(|(_, same)| !same) {
            return Err(mismatch(format!("{field} differs")));
        }
        let prev_hash = hash_bytes(&committed.prev_hash, &what("prev_hash"))?;
        if event_hash(event, &prev_hash)?.as_slice() != committed.hash.as_slice() {
            return Err(mismatch(
                "the event's bytes do not hash to the committed hash".to_string(),
            ));
        }
    }
    if let Some(public_key) = public_key {
        if receipt.signature.is_empty() {
            return Err(ReceiptError::Unsigned);
        }
        let signature: [u8; SIGNATURE_BYTES] =
            receipt.signature.as_slice().try_into().map_err(|_| {
                ReceiptError::BadSignature(format!(
                    "the signature is {} bytes, not {SIGNATURE_BYTES}",
                    receipt.signature.len()
                ))
            })?;
        let key = VerifyingKey::from_bytes(public_key)
            .map_err(|err| ReceiptError::BadSignature(err.to_string()))?;
        key.verify(
            &canonical_bytes(receipt)?,
            &Signature::from_bytes(&signature),
        )
        .map_err(|err| ReceiptError::BadSignature(err.to_string()))?;
        let expected = key_id(public_key);
        if receipt.signature_key_id != expected {
            return Err(ReceiptError::BadSignature(format!(
                "the receipt names key {:?}, the given public key is {expected}",
                receipt
                    .signature_key_id
                    .chars()
                    .take(KEY_ID_SHOWN_CHARS)
                    .collect::<String>()
            )));
        }
    }
    Ok(())
}

/// The id causewayd gives its signing key, and names in every receipt it signs:
/// `ed25519:` and the first 8 bytes of the public key in hex.
pub fn key_id(public_key: &[u8; 32]) -> String {
    let head: String = public_key[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("ed25519:{head}")
}

/// The bytes a receipt's signature covers, as the core lays them out: the domain tag, the event
/// count (`u32`), per event its id (16), position, version and packed timestamp (`u64` each),
/// hash and prev_hash (32 each); the gate count (`u32`), per gate its name (`u32` length and
/// UTF-8) and version (`u64`); then the digest (32). Everything but the signature and its key id.
pub fn canonical_bytes(receipt: &pb::Receipt) -> Result<Vec<u8>, ReceiptError> {
    let mut out = Vec::with_capacity(64 + receipt.events.len() * 112);
    out.extend_from_slice(RECEIPT_DOMAIN_TAG);
    out.extend_from_slice(&count_u32(receipt.events.len(), "receipt event count")?.to_le_bytes());
    for (index, committed) in receipt.events.iter().enumerate() {
        let what = |field: &str| format!("receipt event {index} {field}");
        out.extend_from_slice(&uuid_bytes(&committed.id, &what("id"))?);
        out.extend_from_slice(&committed.position.to_le_bytes());
        out.extend_from_slice(&committed.version.to_le_bytes());
        let timestamp = packed_timestamp(committed.timestamp.as_ref(), &what("timestamp"))?;
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.extend_from_slice(&hash_bytes(&committed.hash, &what("hash"))?);
        out.extend_from_slice(&hash_bytes(&committed.prev_hash, &what("prev_hash"))?);
    }
    out.extend_from_slice(&count_u32(receipt.gates.len(), "receipt gate count")?.to_le_bytes());
    for gate in &receipt.gates {
        out.extend_from_slice(&count_u32(gate.name.len(), "gate name length")?.to_le_bytes());
        out.extend_from_slice(gate.name.as_bytes());
        out.extend_from_slice(&gate.version.to_le_bytes());
    }
    out.extend_from_slice(&hash_bytes(&receipt.digest, "receipt digest")?);
    Ok(out)
}

/// An event's chain hash, recomputed from its fields and payload and the hash of the previous
/// event of its entity (32 zero bytes for the entity's first event). The event's own `hash`
/// field is ignored.
pub fn event_hash(event: &pb::Event, prev_hash: &Hash) -> Result<Hash, ReceiptError> {
    let mut fields = Vec::with_capacity(128);
    fields.extend_from_slice(&event.position.to_le_bytes());
    fields.extend_from_slice(&event.version.to_le_bytes());
    let timestamp = packed_timestamp(event.timestamp.as_ref(), "event timestamp")?;
    fields.extend_from_slice(&timestamp.to_le_bytes());
    fields.extend_from_slice(&uuid_bytes(&event.id, "event id")?);
    fields.extend_from_slice(&uuid_bytes(&event.correlation_id, "event correlation_id")?);
    put_str(&mut fields, &event.scope, "event scope")?;
    put_str(&mut fields, &event.entity, "event entity")?;
    put_str(&mut fields, &event.r#type, "event type")?;
    put_str(&mut fields, &event.content_type, "event content_type")?;
    put_len(&mut fields, event.tags.len(), "event tag count")?;
    for tag in &event.tags {
        put_str(&mut fields, tag, "event tag")?;
    }
    // The core keeps metadata in a BTreeMap, so its encoding is sorted by key; the wire map has
    // no order.
    let metadata: BTreeMap<&String, &String> = event.metadata.iter().collect();
    put_len(&mut fields, metadata.len(), "event metadata count")?;
    for (key, value) in metadata {
        put_str(&mut fields, key, "event metadata key")?;
        put_str(&mut fields, value, "event metadata value")?;
    }
    put_len(&mut fields, event.causation.len(), "event causation count")?;
    for parent in &event.causation {
        fields.extend_from_slice(&uuid_bytes(parent, "event causation id")?);
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(prev_hash);
    hasher.update(&[RECORD_VERSION, KIND_EVENT]);
    hasher.update(&fields);
    hasher.update(&event.payload);
    Ok(*hasher.finalize().as_bytes())
}

/// Packs a timestamp as the core stores it, `wall_ms << 16 | logical`, with `wall_ms` the wall
/// time in whole milliseconds. An absent timestamp is zero, as protobuf defaults it; a value
/// the core could not have produced (sub-millisecond nanos included) is malformed.
pub fn packed_timestamp(
    timestamp: Option<&pb::HybridTimestamp>,
    what: &str,
) -> Result<u64, ReceiptError> {
    let (wall_ms, logical) = match timestamp {
        None => (0, 0),
        Some(timestamp) => (
            crate::timestamp::wall_ms(timestamp)
                .map_err(|err| ReceiptError::Malformed(format!("{what}.wall: {err}")))?,
            timestamp.logical,
        ),
    };
    if logical > u32::from(u16::MAX) {
        return Err(ReceiptError::Malformed(format!(
            "{what}: {wall_ms}+{logical} does not fit 48 bits of milliseconds and 16 of counter"
        )));
    }
    Ok(wall_ms << 16 | u64::from(logical))
}

fn uuid_bytes(text: &str, what: &str) -> Result<[u8; 16], ReceiptError> {
    uuid::Uuid::parse_str(text)
        .map(|id| *id.as_bytes())
        .map_err(|err| ReceiptError::Malformed(format!("{what}: {text:?} is not a uuid: {err}")))
}

fn hash_bytes(bytes: &[u8], what: &str) -> Result<Hash, ReceiptError> {
    bytes.try_into().map_err(|_| {
        ReceiptError::Malformed(format!("{what}: {} bytes, not {HASH_BYTES}", bytes.len()))
    })
}

fn count_u32(len: usize, what: &str) -> Result<u32, ReceiptError> {
    u32::try_from(len).map_err(|_| ReceiptError::Malformed(format!("{what}: {len} is too large")))
}

fn put_len(out: &mut Vec<u8>, len: usize, what: &str) -> Result<(), ReceiptError> {
    let len = u16::try_from(len).map_err(|_| {
        ReceiptError::Malformed(format!("{what}: {len} does not fit the u16 length prefix"))
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

fn put_str(out: &mut Vec<u8>, value: &str, what: &str) -> Result<(), ReceiptError> {
    put_len(out, value.len(), what)?;
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Golden values printed by a throwaway program against `causeway-core`: a store with the
    //! signing secret `[7; 32]` (printed with the key id `golden-key`; here with the id causewayd
    //! gives that key, which the signature does not cover), a gate `order-types` registered at
    //! position 1, then one append of two events of `acme/order-507` with fixed ids, a fixed
    //! command timestamp of 1900000000123+5, three metadata keys, two tags, a correlation id, a
    //! causation link and a non-UTF-8 payload. The core verified this receipt before printing it.

    use super::*;

    const PUBLIC_KEY: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
    const DIGEST: &str = "47501706f0661beb7da5fdd2cdcf65d73bed9995414dd79a8eb86718674f5667";
    const SIGNATURE: &str = "2f2b0246358a73e2ac2c4bd68a1c210f310aa95f412281369a9e9d9aae40fbaa\
                             5be1787b1e2b9aa240ef429a9b189a0c8e7cf595025d8fb2050b63b062b81107";
    const CANONICAL: &str = "63617573657761792e726563656970742e76310002000000\
        01890a5dac96774bbcceb302099a8057\
        0200000000000000\
        0100000000000000\
        05007b38d360ba01\
        931cbf8088cb7c84a5c38f9e9db482fc5a4f8869f2dd0bcef0a2e58879a0f047\
        0000000000000000000000000000000000000000000000000000000000000000\
        01890a5dac967c4e9a1f3d2b8e6f0a11\
        0300000000000000\
        0200000000000000\
        06007b38d360ba01\
        24a94e840d404cf090c0950b522694d1843aeff94ab5ffad41d7af5288048e7c\
        931cbf8088cb7c84a5c38f9e9db482fc5a4f8869f2dd0bcef0a2e58879a0f047\
        01000000\
        0b0000006f726465722d7479706573\
        0100000000000000\
        47501706f0661beb7da5fdd2cdcf65d73bed9995414dd79a8eb86718674f5667";
    const ID_1: &str = "01890a5d-ac96-774b-bcce-b302099a8057";
    const ID_2: &str = "01890a5d-ac96-7c4e-9a1f-3d2b8e6f0a11";
    const CORRELATION: &str = "01890a5d-0000-7000-8000-000000000042";
    const HASH_1: &str = "931cbf8088cb7c84a5c38f9e9db482fc5a4f8869f2dd0bcef0a2e58879a0f047";
    const HASH_2: &str = "24a94e840d404cf090c0950b522694d1843aeff94ab5ffad41d7af5288048e7c";
    const WALL_MS: u64 = 1_900_000_000_123;

    /// A named change to a value, for tests that check every change is caught.
    type Tamper<T> = (&'static str, fn(&mut T));

    fn hex(text: &str) -> Vec<u8> {
        hex::decode(text).expect("valid hex")
    }

    fn public_key() -> [u8; 32] {
        hex(PUBLIC_KEY).try_into().expect("32 bytes")
    }

    fn timestamp(logical: u32) -> Option<pb::HybridTimestamp> {
        Some(crate::timestamp::hybrid(WALL_MS, logical))
    }

    fn golden_events() -> Vec<pb::Event> {
        vec![
            pb::Event {
                position: 2,
                version: 1,
                timestamp: timestamp(5),
                id: ID_1.to_string(),
                scope: "acme".to_string(),
                entity: "order-507".to_string(),
                r#type: "OrderPlaced".to_string(),
                tags: vec!["customer:42".to_string(), "region:eu".to_string()],
                payload: br#"{"total":12}"#.to_vec(),
                content_type: "application/json".to_string(),
                // Inserted out of order: the encoding must sort by key.
                metadata: [("zeta", "last"), ("alpha", "first"), ("mid", "dle")]
                    .into_iter()
                    .map(|(key, value)| (key.to_string(), value.to_string()))
                    .collect(),
                causation: vec![],
                correlation_id: CORRELATION.to_string(),
                hash: hex(HASH_1),
            },
            pb::Event {
                position: 3,
                version: 2,
                timestamp: timestamp(6),
                id: ID_2.to_string(),
                scope: "acme".to_string(),
                entity: "order-507".to_string(),
                r#type: "OrderPaid".to_string(),
                tags: vec![],
                payload: vec![0, 159, 146, 150, 255],
                content_type: String::new(),
                metadata: Default::default(),
                causation: vec![ID_1.to_string()],
                correlation_id: CORRELATION.to_string(),
                hash: hex(HASH_2),
            },
        ]
    }

    fn golden_receipt() -> pb::Receipt {
        let committed =
            |id: &str, position, version, logical, hash: &str, prev: &str| pb::Committed {
                id: id.to_string(),
                position,
                version,
                timestamp: timestamp(logical),
                hash: hex(hash),
                prev_hash: hex(prev),
            };
        pb::Receipt {
            events: vec![
                committed(ID_1, 2, 1, 5, HASH_1, &"00".repeat(32)),
                committed(ID_2, 3, 2, 6, HASH_2, HASH_1),
            ],
            gates: vec![pb::GatePass {
                name: "order-types".to_string(),
                version: 1,
            }],
            digest: hex(DIGEST),
            signature_key_id: "ed25519:ea4a6c63e29c520a".to_string(),
            signature: hex(SIGNATURE),
        }
    }

    #[test]
    fn canonical_bytes_match_the_core() {
        let bytes = canonical_bytes(&golden_receipt()).expect("well-formed receipt");
        assert_eq!(bytes, hex(CANONICAL));
    }

    #[test]
    fn event_hashes_match_the_core() {
        let events = golden_events();
        let first = event_hash(&events[0], &[0; 32]).expect("well-formed event");
        assert_eq!(first.to_vec(), hex(HASH_1));
        let second = event_hash(&events[1], &first).expect("well-formed event");
        assert_eq!(second.to_vec(), hex(HASH_2), "the chain links to the first");
    }

    #[test]
    fn golden_receipt_verifies_with_and_without_the_key() {
        let (receipt, events) = (golden_receipt(), golden_events());
        assert_eq!(verify(&receipt, &events, Some(&public_key())), Ok(()));
        assert_eq!(verify(&receipt, &events, None), Ok(()));
    }

    #[test]
    fn a_receipt_naming_another_key_is_refused() {
        let events = golden_events();
        assert_eq!(key_id(&public_key()), golden_receipt().signature_key_id);
        for named in ["ed25519:e40e84c5b5e4af31", "", "golden-key"] {
            let receipt = pb::Receipt {
                signature_key_id: named.to_string(),
                ..golden_receipt()
            };
            let refused = verify(&receipt, &events, Some(&public_key()));
            let named_key = |why: &str| why.contains("names key");
            assert!(
                matches!(&refused, Err(ReceiptError::BadSignature(why)) if named_key(why)),
                "{named:?}: {refused:?}"
            );
            // Without the key, the key's name is not looked at either.
            assert_eq!(verify(&receipt, &events, None), Ok(()));
        }
    }

    #[test]
    fn a_changed_event_field_or_payload_byte_is_caught() {
        let receipt = golden_receipt();
        let tampers: Vec<Tamper<pb::Event>> = vec![
            ("payload", |event| event.payload[0] ^= 1),
            ("scope", |event| event.scope.push('x')),
            ("entity", |event| event.entity = "order-508".into()),
            ("type", |event| event.r#type = "OrderPlacedX".into()),
            ("content type", |event| event.content_type.clear()),
            ("tag order", |event| event.tags.reverse()),
            ("metadata value", |event| {
                event.metadata.insert("mid".into(), "DLE".into());
            }),
            ("correlation", |event| event.correlation_id = ID_2.into()),
            ("causation", |event| event.causation.push(ID_2.into())),
        ];
        for (what, tamper) in tampers {
            let mut events = golden_events();
            tamper(&mut events[0]);
            let verdict = verify(&receipt, &events, Some(&public_key()));
            assert_eq!(
                verdict,
                Err(ReceiptError::Event {
                    index: 0,
                    detail: "the event's bytes do not hash to the committed hash".into()
                }),
                "changing the {what} must break the hash"
            );
        }
    }

    #[test]
    fn assigned_fields_must_match_the_receipt() {
        let receipt = golden_receipt();
        let tampers: Vec<Tamper<pb::Event>> = vec![
            ("id", |event| event.id = ID_1.into()),
            ("position", |event| event.position += 1),
            ("version", |event| event.version = 1),
            ("timestamp", |event| event.timestamp = timestamp(7)),
            ("hash", |event| event.hash[31] ^= 1),
        ];
        for (field, tamper) in tampers {
            let mut events = golden_events();
            tamper(&mut events[1]);
            assert_eq!(
                verify(&receipt, &events, None),
                Err(ReceiptError::Event {
                    index: 1,
                    detail: format!("{field} differs")
                }),
            );
        }
    }

    #[test]
    fn a_changed_receipt_breaks_the_signature() {
        let events = golden_events();
        let tampers: Vec<Tamper<pb::Receipt>> = vec![
            ("digest", |receipt| receipt.digest[0] ^= 1),
            ("gate version", |receipt| receipt.gates[0].version = 2),
            ("gate name", |receipt| {
                receipt.gates[0].name = "order-typez".into()
            }),
            ("dropped gate", |receipt| receipt.gates.clear()),
            ("signature", |receipt| receipt.signature[10] ^= 1),
        ];
        for (what, tamper) in tampers {
            let mut receipt = golden_receipt();
            tamper(&mut receipt);
            let verdict = verify(&receipt, &events, Some(&public_key()));
            assert!(
                matches!(verdict, Err(ReceiptError::BadSignature(_))),
                "changing the {what} must break the signature, got {verdict:?}"
            );
            assert_eq!(
                verify(&receipt, &events, None),
                Ok(()),
                "without a key only the events are checked"
            );
        }
    }

    #[test]
    fn a_wrong_key_or_missing_signature_is_refused() {
        let (receipt, events) = (golden_receipt(), golden_events());
        let mut other_key = public_key();
        other_key[0] ^= 1;
        assert!(matches!(
            verify(&receipt, &events, Some(&other_key)),
            Err(ReceiptError::BadSignature(_))
        ));
        let unsigned = pb::Receipt {
            signature: vec![],
            ..golden_receipt()
        };
        assert_eq!(
            verify(&unsigned, &events, Some(&public_key())),
            Err(ReceiptError::Unsigned)
        );
    }

    #[test]
    fn missing_or_extra_events_are_a_count_mismatch() {
        let receipt = golden_receipt();
        let events = golden_events();
        assert_eq!(
            verify(&receipt, &events[..1], None),
            Err(ReceiptError::Count {
                receipt: 2,
                given: 1
            })
        );
    }

    #[test]
    fn impossible_wire_values_are_malformed() {
        let mut receipt = golden_receipt();
        receipt.digest.pop();
        assert!(matches!(
            canonical_bytes(&receipt),
            Err(ReceiptError::Malformed(_))
        ));
        let mut events = golden_events();
        events[0].timestamp = Some(crate::timestamp::hybrid(WALL_MS, 1 << 16));
        assert!(matches!(
            event_hash(&events[0], &[0; 32]),
            Err(ReceiptError::Malformed(_))
        ));
        let mut sub_millisecond = crate::timestamp::hybrid(WALL_MS, 0);
        if let Some(wall) = sub_millisecond.wall.as_mut() {
            wall.nanos += 1;
        }
        events[0].timestamp = Some(sub_millisecond);
        assert!(matches!(
            event_hash(&events[0], &[0; 32]),
            Err(ReceiptError::Malformed(_))
        ));
        events[0].correlation_id = "not-a-uuid".into();
        assert!(matches!(
            event_hash(&events[0], &[0; 32]),
            Err(ReceiptError::Malformed(_))
        ));
    }
}
