//! Receipts: what an accepted append proves, and how to check that proof without the store.
//!
//! A receipt lists, per event, the fields assigned on commit and the hash that chains it, plus
//! the gates the append passed and the log digest at commit. Its canonical bytes
//! ([`Receipt::canonical_bytes`]) can be signed with Ed25519 by the store
//! ([`Signer`]); [`verify`] then checks a receipt against the events it names using only the
//! receipt, the events and the public key: each event is re-encoded canonically and its hash
//! recomputed from the receipt's `prev_hash`, so a changed byte in any field or payload, a
//! forged receipt or a wrong key is caught.

use ed25519_dalek::{
    Signature as DalekSignature, Signer as _, SigningKey, Verifier as _, VerifyingKey,
};

use crate::clock::Timestamp;
use crate::codec;
use crate::event::{Event, EventId, Hash, Position, Version};

/// What an accepted append proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// One entry per event, in order.
    pub events: Vec<Committed>,
    /// The gates the append passed, in the order they ran.
    pub gates: Vec<GatePass>,
    /// The log digest after the last event of this append.
    pub digest: Hash,
    /// The store's signature over [`Receipt::canonical_bytes`], when it has a signing key.
    pub signature: Option<Signature>,
}

/// The fields assigned to one event on commit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The event's id.
    pub id: EventId,
    /// Its global position.
    pub position: Position,
    /// Its version within its entity.
    pub version: Version,
    /// Its timestamp.
    pub timestamp: Timestamp,
    /// Its chain hash.
    pub hash: Hash,
    /// The hash of the previous event of its entity (zeros for the first), the link that lets
    /// the hash be recomputed from the event alone.
    pub prev_hash: Hash,
}

/// One gate an append passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatePass {
    /// The gate's name.
    pub name: String,
    /// The definition's version: the position of the event that registered it, or 0 for a gate
    /// compiled into the embedding program.
    pub version: u64,
}

/// An Ed25519 signature with the id of the key that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// Names the key, so a verifier can pick the public key (and keys can rotate).
    pub key_id: String,
    /// The 64 signature bytes.
    pub bytes: [u8; 64],
}

/// A signing key for receipts.
#[derive(Clone)]
pub struct Signer {
    key_id: String,
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a 32-byte Ed25519 secret key.
    pub fn new(key_id: impl Into<String>, secret: [u8; 32]) -> Signer {
        Signer {
            key_id: key_id.into(),
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// The public key that verifies this signer's receipts.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs a receipt in place.
    pub fn sign(&self, receipt: &mut Receipt) {
        let signature = self.key.sign(&receipt.canonical_bytes());
        receipt.signature = Some(Signature {
            key_id: self.key_id.clone(),
            bytes: signature.to_bytes(),
        });
    }
}

/// Why a receipt does not verify.
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
    /// A public key was given but the receipt has no signature.
    #[error("receipt is not signed")]
    Unsigned,
    /// The signature does not verify under the given key.
    #[error("signature does not verify: {0}")]
    BadSignature(String),
}

impl Receipt {
    /// The bytes a signature covers: a domain tag, then every field but the signature, fixed
    /// width and little-endian, strings length-prefixed.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.events.len() * 112);
        out.extend_from_slice(b"causeway.receipt.v1\0");
        out.extend_from_slice(&(self.events.len() as u32).to_le_bytes());
        for committed in &self.events {
            out.extend_from_slice(committed.id.as_bytes());
            out.extend_from_slice(&committed.position.0.to_le_bytes());
            out.extend_from_slice(&committed.version.0.to_le_bytes());
            out.extend_from_slice(&committed.timestamp.to_u64().to_le_bytes());
            out.extend_from_slice(&committed.hash);
            out.extend_from_slice(&committed.prev_hash);
        }
        out.extend_from_slice(&(self.gates.len() as u32).to_le_bytes());
        for gate in &self.gates {
            out.extend_from_slice(&(gate.name.len() as u32).to_le_bytes());
            out.extend_from_slice(gate.name.as_bytes());
            out.extend_from_slice(&gate.version.to_le_bytes());
        }
        out.extend_from_slice(&self.digest);
        out
    }
}

/// Checks a receipt against the events it names, without a store. With `public_key`, the
/// signature must verify under it; without, only the events are checked against the receipt.
pub fn verify(
    receipt: &Receipt,
    events: &[Event],
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
        let fields = [
            ("id", committed.id == event.id),
            ("position", committed.position == event.position),
            ("version", committed.version == event.version),
            ("timestamp", committed.timestamp == event.timestamp),
            ("hash", committed.hash == event.hash),
        ];
        if let Some((field, _)) = fields.iter().find(|(_, same)| !same) {
            return Err(mismatch(format!("{field} differs")));
        }
        let (_, recomputed) = codec::encode(event, &committed.prev_hash, None);
        if recomputed != committed.hash {
            return Err(mismatch(
                "the event's bytes do not hash to the committed hash".to_string(),
            ));
        }
    }
    if let Some(public_key) = public_key {
        let signature = receipt.signature.as_ref().ok_or(ReceiptError::Unsigned)?;
        let key = VerifyingKey::from_bytes(public_key)
            .map_err(|err| ReceiptError::BadSignature(err.to_string()))?;
        key.verify(
            &receipt.canonical_bytes(),
            &DalekSignature::from_bytes(&signature.bytes),
        )
        .map_err(|err| ReceiptError::BadSignature(err.to_string()))?;
    }
    Ok(())
}
