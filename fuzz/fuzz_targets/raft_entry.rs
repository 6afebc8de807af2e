//! The Raft storage codec: a log entry (one segment frame of the replication log) and the vote.
//! The first byte picks which; a decoded value must re-encode to bytes that decode to a value
//! encoding the same (memberships may be re-ordered once, then are canonical).
#![no_main]

use bytes::Bytes;
use causeway_server::cluster::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        let id = codec::decode_entry_id(bytes);
        let Ok(entry) = codec::decode_entry(&Bytes::copy_from_slice(bytes)) else {
            return;
        };
        let id = id.expect("an entry that decodes has a readable id");
        assert_eq!(id, entry.log_id, "the id read alone is the entry's");
        let encoded = Bytes::from(codec::encode_entry(&entry));
        let again = codec::decode_entry(&encoded).expect("an encoded entry decodes");
        assert_eq!(again.log_id, entry.log_id, "the log id round-trips");
        assert_eq!(
            codec::encode_entry(&again),
            encoded,
            "the encoding is canonical"
        );
    } else if let Ok(vote) = codec::decode_vote(bytes) {
        assert_eq!(
            codec::encode_vote(&vote),
            bytes,
            "a vote re-encodes to its bytes"
        );
    }
});
