//! Entry point for the request fuzz target in `fuzz/`: arbitrary bytes decoded as one of the
//! requests of the public services (`EventStoreService`, `OperationsService`, `ClusterService`),
//! as tonic's prost codec decodes them, then checked and converted by the same functions, in
//! the same order, as each handler ([`crate::service`], [`crate::operations`],
//! [`crate::cluster::admin`]) runs them before it touches the store or the cluster. Not an API: hidden from the docs.
//!
//! What must hold: no input panics; a decoded request re-encodes to bytes that decode to the
//! same request; every refusal becomes a status with a message; an append that converts
//! becomes a replicated command whose encoding round-trips.

use causeway_core::Command;
use causeway_core::clock::Timestamp;
use prost::Message;

use crate::convert;
use crate::pb;
use crate::status::{Error, to_status};

/// The request types, in the order of the `rpc` lines of `causeway.v1.EventStoreService`, then
/// `OperationsService`, then `ClusterService`; the selector byte picks one modulo this count.
pub const METHODS: [&str; 22] = [
    "Append",
    "DryRun",
    "Get",
    "ReadEntity",
    "ReadLog",
    "Head",
    "Subscribe",
    "GetAncestors",
    "GetDescendants",
    "GetCorrelation",
    "RegisterGate",
    "ListGates",
    "RemoveGate",
    "VerifyReceipt",
    "Backup",
    "Verify",
    "InitCluster",
    "AddLearner",
    "PromoteVoter",
    "RemoveNode",
    "TransferLeader",
    "GetClusterStatus",
];

/// Decodes `bytes` as the request `method` selects (modulo [`METHODS`]) and validates it as its
/// handler does.
pub fn request(method: u8, bytes: &[u8]) {
    let outcome = match usize::from(method) % METHODS.len() {
        0 => decoded::<pb::AppendRequest>(bytes).map(append),
        1 => decoded::<pb::DryRunRequest>(bytes).map(|request| {
            let append = required(request.append, "append")?;
            convert::append(append, "append.").map(drop)
        }),
        2 => decoded::<pb::GetRequest>(bytes).map(|request| {
            convert::event_id(&request.id, "id")?;
            convert::consistency(request.consistency, "consistency").map(drop)
        }),
        3 => decoded::<pb::ReadEntityRequest>(bytes).map(|request| {
            convert::read_entity_names(&request.scope, &request.entity)?;
            convert::direction(request.direction, "direction")?;
            convert::consistency(request.consistency, "consistency").map(drop)
        }),
        4 => decoded::<pb::ReadLogRequest>(bytes).map(|request| {
            convert::direction(request.direction, "direction")?;
            convert::filter(request.filter, "filter")?;
            convert::consistency(request.consistency, "consistency").map(drop)
        }),
        5 => decoded::<pb::HeadRequest>(bytes)
            .map(|request| convert::consistency(request.consistency, "consistency").map(drop)),
        6 => decoded::<pb::SubscribeRequest>(bytes)
            .map(|request| convert::filter(request.filter, "filter").map(drop)),
        7 => decoded::<pb::GetAncestorsRequest>(bytes)
            .map(|request| convert::event_id(&request.id, "id").map(drop)),
        8 => decoded::<pb::GetDescendantsRequest>(bytes)
            .map(|request| convert::event_id(&request.id, "id").map(drop)),
        9 => decoded::<pb::GetCorrelationRequest>(bytes)
            .map(|request| convert::event_id(&request.correlation_id, "correlation_id").map(drop)),
        10 => decoded::<pb::RegisterGateRequest>(bytes).map(|request| {
            let definition = convert::gate_definition(request.definition, "definition")?;
            definition
                .check()
                .map(drop)
                .map_err(|refusal| Error::field("definition", refusal))
        }),
        11 => decoded::<pb::ListGatesRequest>(bytes).map(|_| Ok(())),
        12 => decoded::<pb::RemoveGateRequest>(bytes)
            .map(|request| convert::gate_name(&request.name, "name")),
        13 => decoded::<pb::VerifyReceiptRequest>(bytes).map(|request| {
            let receipt = required(request.receipt, "receipt")?;
            convert::receipt_from_wire(receipt, "receipt").map(drop)
        }),
        selected => return administration(selected, bytes),
    };
    if let Some(Err(err)) = outcome {
        let status = to_status(err);
        assert!(!status.message().is_empty(), "a refusal says why");
    }
}

/// The operations and cluster requests (selected `14..`): their handlers check fields with
/// the functions called here and answer a status directly. Backup and GetClusterStatus carry
/// no fields; Verify's are clamped, never refused.
fn administration(selected: usize, bytes: &[u8]) {
    use crate::cluster::admin;
    let outcome: Option<Result<(), tonic::Status>> = match selected {
        14 => decoded::<pb::BackupRequest>(bytes).map(|_| Ok(())),
        15 => decoded::<pb::VerifyRequest>(bytes).map(|_| Ok(())),
        16 => decoded::<pb::InitClusterRequest>(bytes)
            .map(|request| admin::voters(&request).map(drop)),
        17 => decoded::<pb::AddLearnerRequest>(bytes).map(|request| match request.node {
            Some(node) => admin::member(&node, "node").map(drop),
            None => Err(to_status(Error::invalid("node", "it is required"))),
        }),
        18 => decoded::<pb::PromoteVoterRequest>(bytes)
            .map(|request| admin::node_id(request.node_id).map(drop)),
        19 => decoded::<pb::RemoveNodeRequest>(bytes)
            .map(|request| admin::node_id(request.node_id).map(drop)),
        20 => decoded::<pb::TransferLeaderRequest>(bytes)
            .map(|request| admin::node_id(request.node_id).map(drop)),
        _ => decoded::<pb::GetClusterStatusRequest>(bytes).map(|_| Ok(())),
    };
    if let Some(Err(status)) = outcome {
        assert!(!status.message().is_empty(), "a refusal says why");
    }
}

/// An append as the handler converts it, then as the writer stamps it into a command for the
/// replicated log.
fn append(request: pb::AppendRequest) -> Result<(), Error> {
    let append = convert::append(request, "")?;
    let command = Command::append(Timestamp::new(1_700_000_000_000, 1), append);
    let encoded = command.encode();
    let decoded = Command::decode(&encoded).expect("an encoded command decodes");
    assert_eq!(decoded, command, "an append's command round-trips");
    Ok(())
}

/// The request tonic would hand the handler, or `None` where tonic answers a decode error.
fn decoded<M: Message + Default + PartialEq>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let encoded = message.encode_to_vec();
    let again = M::decode(encoded.as_slice()).expect("a re-encoded request decodes");
    assert!(
        again == message,
        "a request round-trips through its encoding"
    );
    Some(message)
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, Error> {
    value.ok_or_else(|| Error::invalid(field, "it is required"))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
            .map(|entry| std::fs::read(entry.expect("a corpus entry").path()).expect("read"))
            .collect();
        assert!(!inputs.is_empty(), "the {target} corpus has seeds");
        inputs
    }

    /// Every seed and kept crash input of the `requests` target, through the same entry point.
    #[test]
    fn requests_corpus_holds() {
        let inputs = corpus("requests");
        assert!(
            inputs.len() >= super::METHODS.len(),
            "a seed per request type"
        );
        for bytes in inputs {
            let (&method, rest) = bytes.split_first().expect("a selector byte");
            super::request(method, rest);
        }
    }
}
