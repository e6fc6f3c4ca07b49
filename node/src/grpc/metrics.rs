//! `/metrics`: Prometheus text with etcd's metric names, so the dashboards and alerts
//! written for etcd work against detcd unchanged.
//!
//! Three sources: the member's status, read at scrape time (leader, proposals, database
//! size, keys — no walk of the store); fsync durations, recorded by the production disk
//! as they happen (`etcd_disk_wal_fsync_duration_seconds` for the WAL disk; for the data
//! disk, where detcd makes its state durable — snapshot files — the closest thing etcd
//! has, `etcd_disk_backend_commit_duration_seconds`); and gRPC calls, counted by the
//! client port's front service (`grpc::front`; `grpc_server_started_total`,
//! `grpc_server_handled_total` — a stream is counted as handled when it opens, with the
//! code it opened with).
//!
//! `etcd_network_peer_round_trip_time_seconds` comes from the peer transport's probes
//! (a probe frame on each outgoing peer connection every few seconds, answered on it).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{header, StatusCode};
use prometheus::{Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use super::front::KV_PATH_PREFIX;
use crate::server::NodeHandle;

/// The KV service's methods: their calls are counted through counters resolved once.
const KV_METHODS: [&str; 5] = ["Range", "Put", "DeleteRange", "Txn", "Compact"];

/// One KV method's counters, each resolved (and so exported) at its first use.
#[derive(Default)]
struct KvMethodCounters {
    started: OnceLock<IntCounter>,
    handled_ok: OnceLock<IntCounter>,
}

/// The method of a gRPC call being served, kept to count its answer.
pub enum GrpcCallMethod {
    /// One of [`KV_METHODS`], by index.
    Kv(usize),
    /// Any other `/package.Service/Method` path.
    Other(String),
    /// A path that names no method: not counted.
    Unnamed,
}

/// Every metric detcd exports, registered once per process.
pub struct Metrics {
    registry: Registry,
    wal_fsync_seconds: Histogram,
    /// By peer (`To`, the peer's id in hex, as etcd labels it).
    peer_round_trip_seconds: prometheus::HistogramVec,
    backend_commit_seconds: Histogram,
    grpc_started: IntCounterVec,
    grpc_handled: IntCounterVec,
    /// By [`KV_METHODS`]' index.
    kv_counters: [KvMethodCounters; KV_METHODS.len()],
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
        Arc::new(Metrics {
            registry,
            wal_fsync_seconds,
            peer_round_trip_seconds,
            backend_commit_seconds,
            grpc_started,
            grpc_handled,
            kv_counters: Default::default(),
            from_status,
        })
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

    /// Counts a gRPC call on `path` (`/package.Service/Method`) as started; its answer is
    /// counted by [`Metrics::grpc_call_handled`] with what this returns.
    pub fn grpc_call_started(&self, path: &str) -> GrpcCallMethod {
        let kv_method = path.strip_prefix(KV_PATH_PREFIX).and_then(|method| KV_METHODS.iter().position(|m| *m == method));
        if let Some(index) = kv_method {
            let started = self.kv_counters[index].started.get_or_init(|| {
                self.grpc_started.with_label_values(&["unary", kv_service_name(), KV_METHODS[index]])
            });
            started.inc();
            return GrpcCallMethod::Kv(index);
        }
        let Some((service, method)) = path.trim_start_matches('/').split_once('/') else { return GrpcCallMethod::Unnamed };
        self.grpc_started.with_label_values(&[grpc_type(service, method), service, method]).inc();
        GrpcCallMethod::Other(path.to_string())
    }

    /// Counts a started call as handled with gRPC status `code`.
    pub fn grpc_call_handled(&self, call: &GrpcCallMethod, code: i32) {
        match call {
            GrpcCallMethod::Kv(index) if code == 0 => {
                let handled_ok = self.kv_counters[*index].handled_ok.get_or_init(|| {
                    self.grpc_handled.with_label_values(&["unary", kv_service_name(), KV_METHODS[*index], code_name(0)])
                });
                handled_ok.inc();
            }
            GrpcCallMethod::Kv(index) => {
                self.grpc_handled.with_label_values(&["unary", kv_service_name(), KV_METHODS[*index], code_name(code)]).inc();
            }
            GrpcCallMethod::Other(path) => {
                if let Some((service, method)) = path.trim_start_matches('/').split_once('/') {
                    self.grpc_handled.with_label_values(&[grpc_type(service, method), service, method, code_name(code)]).inc();
                }
            }
            GrpcCallMethod::Unnamed => {}
        }
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

/// Adds `/metrics` to a router (the client port's, or the metrics listener's).
pub fn add_routes(router: axum::Router, node: NodeHandle, metrics: Arc<Metrics>) -> axum::Router {
    router.route("/metrics", axum::routing::get(move || {
        let (metrics, node) = (metrics.clone(), node.clone());
        async move { metrics.render(&node).await }
    }))
}

/// `etcdserverpb.KV`, from the KV service's path prefix.
fn kv_service_name() -> &'static str {
    KV_PATH_PREFIX.trim_matches('/')
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
