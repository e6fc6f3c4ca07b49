//! The plain HTTP endpoints etcd serves on its client port beside gRPC: `/health` (what
//! load balancers probe), `/livez` and `/readyz` (what Kubernetes probes), `/version`.
//!
//! `/health` is etcd 3.4's: `{"health":"true"}` with 200 when the member has a leader,
//! no alarm is active and a linearizable read succeeds in time; `{"health":"false"}` with
//! 503 otherwise. `/livez` and `/readyz` are etcd 3.5's: named checks — livez:
//! `serializable_read`; readyz: `data_corruption` (no CORRUPT alarm), `serializable_read`,
//! `linearizable_read` — answering `ok` (200), or each failed check as `[-]name failed:
//! reason` and `<livez|readyz> check failed` (503); `?verbose` lists every check.

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

/// One named check of `/livez` or `/readyz`: `Err(reason)` when it fails.
async fn probe_check(node: &NodeHandle, name: &str) -> Result<(), String> {
    let timeout = Duration::from_millis(HEALTH_READ_TIMEOUT_MS);
    match name {
        "data_corruption" => {
            let status = node.status().await.ok_or("server stopped")?;
            let corrupt = status.alarms.iter().any(|(_, alarm)| *alarm == crate::pb::etcdserverpb::AlarmType::Corrupt as i32);
            if corrupt { Err("alarm activated: CORRUPT".into()) } else { Ok(()) }
        }
        "serializable_read" | "linearizable_read" => {
            let read = node.range(RangeRequest { key: b"health".to_vec(), serializable: name == "serializable_read", ..Default::default() });
            match tokio::time::timeout(timeout, read).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.message().to_string()),
                Err(_) => Err("etcdserver: request timed out".into()),
            }
        }
        other => unreachable!("no check named {other}"),
    }
}

/// `/livez` or `/readyz` (see the module documentation).
async fn probe(node: NodeHandle, path: &'static str, checks: &'static [&'static str], verbose: bool) -> (StatusCode, String) {
    let mut lines = String::new();
    let mut failed = false;
    for name in checks {
        match probe_check(&node, name).await {
            Ok(()) => lines.push_str(&format!("[+]{name} ok
")),
            Err(reason) => {
                failed = true;
                lines.push_str(&format!("[-]{name} failed: {reason}
"));
            }
        }
    }
    if failed {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{lines}{path} check failed
"))
    } else if verbose {
        (StatusCode::OK, format!("{lines}ok
"))
    } else {
        (StatusCode::OK, "ok
".to_string())
    }
}

/// The gRPC router with the HTTP endpoints added.
pub fn add_routes(router: axum::Router, node: NodeHandle) -> axum::Router {
    let version = format!(r#"{{"etcdserver":"{SERVER_VERSION}","etcdcluster":"{}.0"}}"#, cluster_version());
    let (live, ready) = (node.clone(), node.clone());
    let verbose = |query: Option<&str>| query.is_some_and(|q| q.split('&').any(|p| p == "verbose" || p.starts_with("verbose=")));
    router
        .route(
            "/livez",
            get(move |uri: axum::http::Uri| probe(live.clone(), "livez", &["serializable_read"], verbose(uri.query()))),
        )
        .route(
            "/readyz",
            get(move |uri: axum::http::Uri| {
                probe(ready.clone(), "readyz", &["data_corruption", "serializable_read", "linearizable_read"], verbose(uri.query()))
            }),
        )
        .route("/health", get(move || health(node.clone())))
        .route("/version", get(move || std::future::ready(json(StatusCode::OK, version.clone()))))
}

/// Adds `/health` alone (for the metrics listener).
pub fn add_health_route(router: axum::Router, node: NodeHandle) -> axum::Router {
    router.route("/health", get(move || health(node.clone())))
}

/// The cluster version etcd reports: major.minor of the server version.
fn cluster_version() -> String {
    SERVER_VERSION.rsplit_once('.').map_or(SERVER_VERSION, |(major_minor, _)| major_minor).to_string()
}
