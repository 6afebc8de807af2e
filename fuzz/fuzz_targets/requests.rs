//! Every `EventStoreService` request: the first byte picks the request type (modulo the 14 in
//! `causeway_server::fuzzing::METHODS`), the rest is its protobuf encoding, decoded and
//! validated as the server's handler does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&method, bytes)) = data.split_first() {
        causeway_server::fuzzing::request(method, bytes);
    }
});
