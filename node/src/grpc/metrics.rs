//! `/metrics`: Prometheus text with etcd's metric names, so the dashboards and alerts
//! written for etcd work against detcd unchanged.
//!
//! Three sources: the member's status, read at scrape time (leader, proposals, database
//! size, keys — no walk of the store); fsync durations, recorded by the production disk
//! as they happen (`etcd_disk_wal_fsync_duration_seconds` for the WAL disk; for the data
//! disk, where detcd makes its state durable — snapshot files — the closest thing etcd
//! has, `etcd_disk_backend_commit_duration_seconds`); and gRPC calls, counted by a
//! middleware on the client port (`grpc_server_started_total`, `grpc_server_handled_total`
//! — a stream is counted as handled when it opens, with the code it opened with).
//!
//! `etcd_network_peer_round_trip_time_seconds` comes from the peer transport's probes
//! (a probe frame on each outgoing peer connection every few seconds, answered on it).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use prometheus::{Encoder, Gauge, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, TextEncoder};

use crate::server::NodeHandle;

/// Every metric detcd exports, registered once per process.
pub struct Metrics {
    registry: Registry,
    wal_fsync_seconds: Histogram,
    /// By peer (`To`, the peer's id in hex, as etcd labels it).
    peer_round_trip_seconds: prometheus::HistogramVec,
    backend_commit_seconds: Histogram,
    grpc_started: IntCounterVec,
    grpc_handled: IntCounterVec,
    /// Read from the member's status at every scrape.
    from_status: Vec<(&'static str, Gauge)>,
}

/// etcd's buckets for disk durations: 1 ms to 8 s, doubling.
fn disk_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid buckets")
}

/// The status-derived metrics: name and help.
const STATUS_METRICS: [(&str, &str); 12] = [
    ("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not."),
    ("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise."),
    ("etcd_server_leader_changes_seen_total", "The number of leader changes seen."),
    ("etcd_server_proposals_committed_total", "The total number of consensus proposals committed."),
    ("etcd_server_proposals_applied_total", "The total number of consensus proposals applied."),
    ("etcd_server_proposals_pending", "The current number of pending proposals to commit."),
    ("etcd_server_proposals_failed_total", "The total number of failed proposals seen."),
    ("etcd_mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes."),
    ("etcd_mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes."),
    ("etcd_debugging_mvcc_keys_total", "Total number of keys."),
    ("detcd_server_loop_turn_longest_seconds", "detcd: the longest turn of the member's loop so far (it answers no peer and no client meanwhile)."),
    ("detcd_server_loop_turn_longest_without_fsync_seconds", "detcd: the same, without the turn's WAL fsync."),
];

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str| {
            let histogram = Histogram::with_opts(HistogramOpts::new(name, help).buckets(disk_buckets())).expect("valid histogram");
            registry.register(Box::new(histogram.clone())).expect("registered once");
            histogram
        };
        let wal_fsync_seconds =
            histogram("etcd_disk_wal_fsync_duration_seconds", "The latency distributions of fsync called by WAL.");
        let backend_commit_seconds = histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend (detcd: fsyncs of the data disk, where snapshots are made durable).",
        );
        let peer_round_trip_seconds = prometheus::HistogramVec::new(
            HistogramOpts::new("etcd_network_peer_round_trip_time_seconds", "Round-Trip-Time histogram between peers")
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16).expect("valid buckets")),
            &["To"],
        )
        .expect("valid histogram");
        registry.register(Box::new(peer_round_trip_seconds.clone())).expect("registered once");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry.register(Box::new(counter.clone())).expect("registered once");
            counter
        };
        let grpc_started = counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            &["grpc_type", "grpc_service", "grpc_method"],
        );
        let grpc_handled = counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        );
        let from_status = STATUS_METRICS
            .iter()
            .map(|(name, help)| {
                let gauge = Gauge::new(*name, *help).expect("valid gauge");
                registry.register(Box::new(gauge.clone())).expect("registered once");
                (*name, gauge)
            })
            .collect();
        Arc::new(Metrics { registry, wal_fsync_seconds, peer_round_trip_seconds, backend_commit_seconds, grpc_started, grpc_handled, from_status })
    }

    pub fn record_wal_fsync(&self, took: Duration) {
        self.wal_fsync_seconds.observe(took.as_secs_f64());
    }

    /// One probe's round trip to `peer` (the peer transport measures them).
    pub fn record_peer_round_trip(&self, peer: u64, took: Duration) {
        self.peer_round_trip_seconds.with_label_values(&[&format!("{peer:x}")]).observe(took.as_secs_f64());
    }

    pub fn record_data_fsync(&self, took: Duration) {
        self.backend_commit_seconds.observe(took.as_secs_f64());
    }

    /// Counts one gRPC call on `path` (`/package.Service/Method`) answered with `code`.
    pub fn record_grpc(&self, path: &str, code: &str) {
        let Some((service, method)) = path.trim_start_matches('/').split_once('/') else { return };
        let kind = grpc_type(service, method);
        self.grpc_started.with_label_values(&[kind, service, method]).inc();
        self.grpc_handled.with_label_values(&[kind, service, method, code]).inc();
    }

    /// The text exposition, with the status gauges read now.
    async fn render(&self, node: &NodeHandle) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
        if let Some(status) = node.status().await {
            let value = |name: &str| -> f64 {
                match name {
                    "etcd_server_has_leader" => f64::from(u8::from(status.leader_id != 0)),
                    "etcd_server_is_leader" => f64::from(u8::from(status.leader_id == status.member_id)),
                    "etcd_server_leader_changes_seen_total" => status.leader_changes_seen as f64,
                    "etcd_server_proposals_committed_total" => status.commit_index as f64,
                    "etcd_server_proposals_applied_total" => status.applied_index as f64,
                    "etcd_server_proposals_pending" => status.proposals_pending as f64,
                    "etcd_server_proposals_failed_total" => status.proposals_failed as f64,
                    "etcd_mvcc_db_total_size_in_bytes" => status.db_size_bytes as f64,
                    "etcd_mvcc_db_total_size_in_use_in_bytes" => status.db_size_in_use_bytes as f64,
                    "etcd_debugging_mvcc_keys_total" => status.live_keys as f64,
                    "detcd_server_loop_turn_longest_seconds" => status.loop_turn_longest_ms as f64 / 1000.0,
                    "detcd_server_loop_turn_longest_without_fsync_seconds" => status.loop_turn_longest_without_sync_ms as f64 / 1000.0,
                    other => unreachable!("no status metric {other}"),
                }
            };
            for (name, gauge) in &self.from_status {
                gauge.set(value(name));
            }
        }
        let mut text = Vec::new();
        let encoder = TextEncoder::new();
        match encoder.encode(&self.registry.gather(), &mut text) {
            Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], String::from_utf8_lossy(&text).into_owned()),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], e.to_string()),
        }
    }
}

/// etcd's `grpc_type` label for a method.
fn grpc_type(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("etcdserverpb.Watch", "Watch") | ("etcdserverpb.Lease", "LeaseKeepAlive") => "bidi_stream",
        ("etcdserverpb.Maintenance", "Snapshot") | ("v3electionpb.Election", "Observe") => "server_stream",
        _ => "unary",
    }
}

/// Adds `/metrics` and the gRPC call counting to the client port's router.
pub fn add_routes(router: axum::Router, node: NodeHandle, metrics: Arc<Metrics>) -> axum::Router {
    let scrape = metrics.clone();
    router.route("/metrics", axum::routing::get(move || {
        let (metrics, node) = (scrape.clone(), node.clone());
        async move { metrics.render(&node).await }
    })).layer(axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| {
        let metrics = metrics.clone();
        async move {
            let is_grpc = request.headers().get(header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
            let path = request.uri().path().to_string();
            let response = next.run(request).await;
            if is_grpc {
                // A call refused or failed at once answers with its status in the headers
                // (a trailers-only response); otherwise it opened with OK.
                let code = response.headers().get("grpc-status").and_then(|c| c.to_str().ok()).and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
                metrics.record_grpc(&path, code_name(code));
            }
            response
        }
    }))
}

/// The name of a gRPC status code, as the `grpc_code` label carries it.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}
