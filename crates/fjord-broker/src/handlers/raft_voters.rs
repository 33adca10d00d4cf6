//! AddRaftVoter / RemoveRaftVoter (KIP-853): voters of the metadata quorum added and removed
//! online (`kafka-metadata-quorum add-controller|remove-controller`, `fjord cluster
//! add-voter|remove-voter`). Any broker answers, asking the quorum's leader, as a Kafka broker
//! forwards them to the active controller.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{
    AddRaftVoterRequest, AddRaftVoterResponse, RemoveRaftVoterRequest, RemoveRaftVoterResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::describe_quorum::CONTROLLER_LISTENER;
use super::{RequestContext, str_bytes};
use crate::broker::Broker;
use crate::errors;

/// How long a RemoveRaftVoter (or an AddRaftVoter without a timeout) waits for its change to
/// commit (RemoveRaftVoter carries no timeout; Kafka
/// waits its request timeout; this stays under a client's usual 30 s).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(25);

/// An error code with its message.
type Refusal = (i16, String);

/// The request's cluster id, when it names one, must be this cluster's.
fn check_cluster(broker: &Broker, asked: Option<&StrBytes>) -> Result<(), Refusal> {
    match asked {
        Some(id) if id.as_str() != broker.cluster_id => Err((
            errors::INCONSISTENT_CLUSTER_ID,
            format!(
                "The given id \"{id}\" doesn't match the cluster id \"{}\"",
                broker.cluster_id
            ),
        )),
        _ => Ok(()),
    }
}

/// The voter named by id and directory id, as Kafka checks it (an id below 0 or the zero
/// directory id names none).
fn voter(id: i32, dir: uuid::Uuid, what: &str) -> Result<(u64, String), Refusal> {
    if id < 0 || dir.is_nil() {
        return Err((
            errors::INVALID_REQUEST,
            format!("{what} voter request didn't include a valid voter"),
        ));
    }
    Ok((id as u64, crate::ids::encode(dir)))
}

fn refusal(e: fjord_quorum::VoterError) -> Refusal {
    let code = match e.kind {
        fjord_quorum::VoterRefusal::Duplicate => errors::DUPLICATE_VOTER,
        fjord_quorum::VoterRefusal::NotFound => errors::VOTER_NOT_FOUND,
        fjord_quorum::VoterRefusal::NotReady => errors::REQUEST_TIMED_OUT,
        fjord_quorum::VoterRefusal::Invalid => errors::INVALID_REQUEST,
    };
    (code, e.message)
}

pub async fn add(
    broker: &Arc<Broker>,
    request: AddRaftVoterRequest,
    _ctx: &RequestContext,
) -> AddRaftVoterResponse {
    let outcome = async {
        check_cluster(broker, request.cluster_id.as_ref())?;
        let (node, dir) = voter(request.voter_id, request.voter_directory_id, "Add")?;
        let Some(listener) = request
            .listeners
            .iter()
            .find(|l| l.name.as_str() == CONTROLLER_LISTENER)
        else {
            let given: Vec<String> = request
                .listeners
                .iter()
                .map(|l| format!("{}://{}:{}", l.name, l.host, l.port))
                .collect();
            return Err((
                errors::INVALID_REQUEST,
                format!(
                    "Add voter request didn't include the endpoint ([{}]) for the default listener {CONTROLLER_LISTENER}",
                    given.join(", ")
                ),
            ));
        };
        let host = listener.host.as_str();
        let address = if host.contains(':') {
            format!("[{host}]:{}", listener.port)
        } else {
            format!("{host}:{}", listener.port)
        };
        // A timeout of 0 or less waits as long as a removal does.
        let timeout = match request.timeout_ms {
            ms if ms <= 0 => REMOVE_TIMEOUT,
            ms => Duration::from_millis(ms.min(600_000) as u64),
        };
        broker
            .quorum
            .add_voter(node, &dir, &address, timeout)
            .await
            .map_err(refusal)
    }
    .await;
    let mut r = AddRaftVoterResponse::default();
    (r.error_code, r.error_message) = error_fields(outcome);
    r
}

pub async fn remove(
    broker: &Arc<Broker>,
    request: RemoveRaftVoterRequest,
    _ctx: &RequestContext,
) -> RemoveRaftVoterResponse {
    let outcome = async {
        check_cluster(broker, request.cluster_id.as_ref())?;
        let (node, dir) = voter(request.voter_id, request.voter_directory_id, "Remove")?;
        broker
            .quorum
            .remove_voter(node, &dir, REMOVE_TIMEOUT)
            .await
            .map_err(refusal)
    }
    .await;
    let mut r = RemoveRaftVoterResponse::default();
    (r.error_code, r.error_message) = error_fields(outcome);
    r
}

/// A response's error code and message for `outcome` (0 and none when it succeeded).
fn error_fields(outcome: Result<(), Refusal>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (errors::NONE, None),
        Err((code, message)) => (code, Some(str_bytes(message))),
    }
}
