//! etcd's gRPC API (tonic) in front of a [`NodeHandle`]. Production only: the simulator
//! drives the same handle directly. One file per service; this one binds and serves.

use std::net::SocketAddr;

mod auth;
mod cluster;
mod direct;
mod election;
mod front;
mod gateway;
mod http;
pub mod initial_check;
mod kv;
mod lease;
mod lock;
mod maintenance;
pub mod metrics;
mod watch;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};

pub use self::auth::{AuthService, BCRYPT_COST_MAX, BCRYPT_COST_MIN};
pub use self::cluster::ClusterService;
pub use self::election::ElectionService;
pub use self::kv::KvService;
pub use self::lease::LeaseService;
pub use self::lock::LockService;
pub use self::maintenance::{MaintenanceService, SERVER_VERSION};
pub use self::watch::WatchService;
use crate::errors::{EtcdError, GrpcCode};
use crate::pb::etcdserverpb::auth_server::AuthServer;
use crate::pb::etcdserverpb::cluster_server::ClusterServer;
use crate::pb::etcdserverpb::kv_server::KvServer;
use crate::pb::etcdserverpb::lease_server::LeaseServer;
use crate::pb::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::pb::etcdserverpb::watch_server::WatchServer;
use crate::pb::v3electionpb::election_server::ElectionServer;
use crate::pb::v3lockpb::lock_server::LockServer;
use crate::server::NodeHandle;

/// Room for gRPC framing above `--max-request-bytes` (etcd allows the same 512 KiB).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Maps an etcd error to the gRPC status clients match on.
pub fn to_status(error: EtcdError) -> Status {
    let code = match error.code() {
        GrpcCode::InvalidArgument => Code::InvalidArgument,
        GrpcCode::OutOfRange => Code::OutOfRange,
        GrpcCode::ResourceExhausted => Code::ResourceExhausted,
        GrpcCode::NotFound => Code::NotFound,
        GrpcCode::FailedPrecondition => Code::FailedPrecondition,
        GrpcCode::Unavailable => Code::Unavailable,
        GrpcCode::DataLoss => Code::DataLoss,
        GrpcCode::DeadlineExceeded => Code::DeadlineExceeded,
        GrpcCode::PermissionDenied => Code::PermissionDenied,
        GrpcCode::Unauthenticated => Code::Unauthenticated,
    };
    Status::new(code, error.message())
}

/// Serves `/metrics` and `/health` alone on a bound listener (`--listen-metrics-urls`).
pub async fn serve_metrics(
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    node: NodeHandle,
    metrics: std::sync::Arc<metrics::Metrics>,
) -> Result<(), tonic::transport::Error> {
    let router = metrics::add_routes(http::add_health_route(axum::Router::new(), node.clone()), node, metrics);
    server_builder(tls)?
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(router))
        .serve_with_incoming(incoming(listener))
        .await
}

/// tonic's stream of a listener's connections, each with TCP_NODELAY.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The client port's HTTP/2 settings, from etcd's flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcSettings {
    /// `--max-concurrent-streams` (etcd's default: unlimited, `u32::MAX`).
    pub max_concurrent_streams: u32,
    /// `--grpc-keepalive-interval`: how often the server pings an idle connection (0: never).
    pub keepalive_interval_ms: u64,
    /// `--grpc-keepalive-timeout`: how long it waits for the ping's answer.
    pub keepalive_timeout_ms: u64,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        GrpcSettings { max_concurrent_streams: u32::MAX, keepalive_interval_ms: 2 * 3600 * 1000, keepalive_timeout_ms: 20_000 }
    }
}

/// A server builder, with TLS for an `https://` listener.
fn server_builder(tls: Option<tonic::transport::ServerTlsConfig>) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let builder = tonic::transport::Server::builder();
    match tls {
        Some(tls) => builder.tls_config(tls),
        None => Ok(builder),
    }
}

/// Binds the client address now, so a busy port fails start-up instead of a later task.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    crate::env::tcp::bind_listener(addr)
}

/// Serves the client API on a bound listener until the process ends.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    node: NodeHandle,
    max_request_bytes: usize,
    bcrypt_cost: u32,
    settings: GrpcSettings,
    metrics: std::sync::Arc<metrics::Metrics>,
) -> Result<(), tonic::transport::Error> {
    // Every service takes requests up to the same size, as etcd's one server-wide
    // MaxRecvMsgSize (tonic's own default would be 4 MiB for those not set), and answers
    // of any size.
    let request_bytes_max = max_request_bytes + GRPC_OVERHEAD_BYTES;
    macro_rules! limited {
        ($server:expr) => {
            $server.max_decoding_message_size(request_bytes_max).max_encoding_message_size(usize::MAX)
        };
    }
    let kv = limited!(KvServer::new(KvService { node: node.clone() }));
    let kv_calls = direct::KvCalls {
        kv: std::sync::Arc::new(KvService { node: node.clone() }),
        metrics: metrics.clone(),
        request_bytes_max,
    };
    // The KV service is not the router's: its calls are answered by `direct` (plaintext
    // HTTP/2) or by the front service, before the router (see `front`).
    let routes = tonic::service::Routes::new(limited!(WatchServer::new(WatchService { node: node.clone() })))
        .add_service(limited!(LeaseServer::new(LeaseService { node: node.clone() })))
        .add_service(limited!(MaintenanceServer::new(MaintenanceService { node: node.clone() })))
        .add_service(limited!(ClusterServer::new(ClusterService { node: node.clone() })))
        .add_service(limited!(LockServer::new(LockService { node: node.clone() })))
        .add_service(limited!(ElectionServer::new(ElectionService { node: node.clone() })))
        .add_service(limited!(AuthServer::new(AuthService { node: node.clone(), bcrypt_cost })));
    let router = gateway::add_routes(routes.into_axum_router(), node.clone(), max_request_bytes, bcrypt_cost);
    let router = metrics::add_routes(http::add_routes(router, node.clone()), node, metrics.clone());
    let routes = tonic::service::Routes::from(router);
    let front = front::FrontLayer { kv, metrics };
    // Plaintext HTTP/2 connections are served by the port's own server (see `direct`),
    // which hands tonic's server the HTTP/1.1 ones; TLS connections are all tonic's.
    let incoming = match &tls {
        Some(_) => futures_util::future::Either::Left(incoming(listener)),
        None => {
            let (http1, http1_connections) = tokio::sync::mpsc::unbounded_channel();
            let bridge = tower_layer::Layer::layer(&front, routes.clone());
            tokio::spawn(direct::accept_loop(listener, settings, kv_calls, bridge, http1));
            futures_util::future::Either::Right(futures_util::stream::unfold(http1_connections, |mut connections| async move {
                let connection = connections.recv().await?;
                Some((Ok::<_, std::io::Error>(connection), connections))
            }))
        }
    };
    let keepalive = |ms: u64| (ms > 0).then(|| std::time::Duration::from_millis(ms));
    server_builder(tls)?
        // etcd allows any number of streams per connection by default (grpc's
        // MaxConcurrentStreams is math.MaxUint32): clients multiplex thousands of
        // watches on one connection.
        .max_concurrent_streams(settings.max_concurrent_streams)
        .http2_keepalive_interval(keepalive(settings.keepalive_interval_ms))
        .http2_keepalive_timeout(keepalive(settings.keepalive_timeout_ms))
        // HTTP/1.1 for the plain HTTP endpoints (curl, load balancers).
        .accept_http1(true)
        .layer(front)
        .add_routes(routes)
        .serve_with_incoming(incoming)
        .await
}

/// The member handle for this call's client, carrying its credentials: etcd's `token`
/// metadata (what etcd clients send) or `authorization` (what the JSON gateway passes on
/// from the HTTP `Authorization` header); without a token, the common name of the TLS
/// client certificate tonic verified (`--client-cert-auth`), as etcd.
fn client_node<T>(node: &NodeHandle, request: &tonic::Request<T>) -> NodeHandle {
    use crate::auth::Credentials;
    let metadata = request.metadata();
    let token = metadata.get("token").or_else(|| metadata.get("authorization")).and_then(|v| v.to_str().ok()).map(str::to_string);
    let credentials = match token {
        Some(token) => Credentials::Token(token),
        None => request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|leaf| crate::tls::common_name(leaf)))
            .map_or(Credentials::None, Credentials::CertificateName),
    };
    node.with_credentials(credentials)
}
