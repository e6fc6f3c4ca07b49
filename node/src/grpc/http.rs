//! The plain HTTP endpoints etcd serves on its client port beside gRPC: `/health` (what
//! load balancers probe) and `/version`.
//!
//! `/health` is etcd 3.4's: `{"health":"true"}` with 200 when the member has a leader,
//! no alarm is active and a linearizable read succeeds in time; `{"health":"false"}` with
//! 503 otherwise.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::routing::get;

use crate::grpc::SERVER_VERSION;
use crate::pb::etcdserverpb::RangeRequest;
use crate::server::NodeHandle;

/// How long `/health` waits for its linearizable read.
pub const HEALTH_READ_TIMEOUT_MS: u64 = 1000;

type JsonAnswer = (StatusCode, [(header::HeaderName, &'static str); 1], String);

fn json(status: StatusCode, body: String) -> JsonAnswer {
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

async fn health(node: NodeHandle) -> JsonAnswer {
    let healthy = match node.status().await {
        Some(status) if status.leader_id != 0 && status.alarms.is_empty() => {
            let read = node.range(RangeRequest { key: b"health".to_vec(), ..Default::default() });
            matches!(tokio::time::timeout(Duration::from_millis(HEALTH_READ_TIMEOUT_MS), read).await, Ok(Ok(_)))
        }
        _ => false,
    };
    if healthy {
        json(StatusCode::OK, r#"{"health":"true"}"#.to_string())
    } else {
        json(StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#.to_string())
    }
}

/// The gRPC router with the HTTP endpoints added.
pub fn add_routes(router: axum::Router, node: NodeHandle) -> axum::Router {
    let version = format!(r#"{{"etcdserver":"{SERVER_VERSION}","etcdcluster":"{}.0"}}"#, cluster_version());
    router
        .route("/health", get(move || health(node.clone())))
        .route("/version", get(move || std::future::ready(json(StatusCode::OK, version.clone()))))
}

/// The cluster version etcd reports: major.minor of the server version.
fn cluster_version() -> String {
    SERVER_VERSION.rsplit_once('.').map_or(SERVER_VERSION, |(major_minor, _)| major_minor).to_string()
}
