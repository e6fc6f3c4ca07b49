//! etcd's HTTP/JSON gateway (grpc-gateway, as etcd 3.4 serves it on the client port):
//! `POST /v3/<service>/<method>` with the request as JSON, answered with the response as
//! JSON — proto field names as written (`create_revision`, `dbSize`, `ID`), 64-bit
//! integers as strings, bytes as base64, enums by name, default values left out —, so
//! the `curl` examples of etcd's documentation work unchanged. `/v3beta/` is the same
//! (etcd 3.4 still serves it).
//!
//! Every call goes to the same service code as gRPC (the tonic service's method itself),
//! so validation, errors and answers are identical. Errors are grpc-gateway's:
//! `{"error": msg, "message": msg, "code": grpc_code}` with the HTTP status grpc-gateway
//! maps the code to. Streams (`/v3/watch`, `/v3/lease/keepalive`, election observe,
//! maintenance snapshot) answer one `{"result": ...}` object per line; a stream's request
//! body is read as it arrives, one JSON object after another.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response as HttpResponse;
use axum::routing::post;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::tokio_stream::{Stream, StreamExt};
use tonic::{Code, Status};

use super::{AuthService, ClusterService, ElectionService, KvService, LeaseService, LockService, MaintenanceService, GRPC_OVERHEAD_BYTES};
use crate::pb::etcdserverpb::auth_server::Auth;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3lockpb::lock_server::Lock;
use crate::server::NodeHandle;

/// Requests of one streaming call waiting to be handed to the member.
const GATEWAY_STREAM_REQUESTS_MAX: usize = 16;

/// grpc-gateway v1's HTTP status for a gRPC code (`runtime.HTTPStatusFromCode`).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_body(status: StatusCode, body: String) -> HttpResponse {
    let mut response = HttpResponse::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Generated serializers of plain messages cannot fail.
    serde_json::to_string(value).expect("a message serializes to JSON")
}

/// grpc-gateway's error body for a unary call.
fn error_response(status: &Status) -> HttpResponse {
    let message = serde_json::Value::from(status.message());
    json_body(http_status(status.code()), format!("{{\"error\":{message},\"message\":{message},\"code\":{}}}", status.code() as i32))
}

/// grpc-gateway's error line inside a stream.
fn stream_error_line(status: &Status) -> String {
    let http = http_status(status.code());
    format!(
        "{{\"error\":{{\"grpc_code\":{},\"http_code\":{},\"message\":{},\"http_status\":{}}}}}\n",
        status.code() as i32,
        http.as_u16(),
        serde_json::Value::from(status.message()),
        serde_json::Value::from(http.canonical_reason().unwrap_or(""))
    )
}

/// A request from a unary call's body: an empty body is the empty request.
fn parse_request<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The client's token, from the `Authorization` header (as etcd's gateway passes it on;
/// a `Bearer ` prefix is taken off).
fn token_of(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(value.strip_prefix("Bearer ").unwrap_or(value).to_string())
}

/// A gRPC request carrying the HTTP request's token as the `token` metadata.
fn grpc_request<T>(message: T, headers: &axum::http::HeaderMap) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = token_of(headers).and_then(|token| token.parse().ok()) {
        request.metadata_mut().insert("token", value);
    }
    request
}

/// One unary call: parse, call the service, answer.
async fn unary<Req, Resp, F, Fut>(headers: axum::http::HeaderMap, body: Bytes, call: F) -> HttpResponse
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let request = match parse_request::<Req>(&body) {
        Ok(request) => request,
        Err(status) => return error_response(&status),
    };
    match call(grpc_request(request, &headers)).await {
        Ok(answer) => json_body(StatusCode::OK, to_json(answer.get_ref())),
        Err(status) => error_response(&status),
    }
}

/// A stream of answers as newline-delimited `{"result": ...}` objects; an error ends it
/// with grpc-gateway's error line.
fn stream_response<T, S>(answers: S) -> HttpResponse
where
    T: Serialize,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    let lines = answers.map(|answer| {
        let line = match answer {
            Ok(value) => format!("{{\"result\":{}}}\n", to_json(&value)),
            Err(status) => stream_error_line(&status),
        };
        Ok::<Bytes, Infallible>(Bytes::from(line))
    });
    json_body(StatusCode::OK, String::new()).map(|_| Body::from_stream(lines))
}

/// The requests of a streaming call, parsed from its body as the bytes arrive: JSON
/// objects one after another (whitespace or newlines between them). A malformed object
/// ends the requests with an error.
fn streamed_requests<T: DeserializeOwned + Send + 'static>(body: Body, body_bytes_max: usize) -> ReceiverStream<Result<T, Status>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(GATEWAY_STREAM_REQUESTS_MAX);
    tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(Ok(chunk)) = chunks.next().await {
            pending.extend_from_slice(&chunk);
            let mut parsed = serde_json::Deserializer::from_slice(&pending).into_iter::<T>();
            let mut requests = Vec::new();
            let failure = loop {
                match parsed.next() {
                    Some(Ok(request)) => requests.push(request),
                    Some(Err(e)) if e.is_eof() => break None,
                    Some(Err(e)) => break Some(Status::invalid_argument(e.to_string())),
                    None => break None,
                }
            };
            let consumed = parsed.byte_offset();
            pending.drain(..consumed);
            for request in requests {
                if sender.send(Ok(request)).await.is_err() {
                    return;
                }
            }
            if let Some(status) = failure {
                let _ = sender.send(Err(status)).await;
                return;
            }
            if pending.len() > body_bytes_max {
                let _ = sender.send(Err(Status::invalid_argument("request is too large"))).await;
                return;
            }
        }
    });
    ReceiverStream::new(receiver)
}

/// The requests of a client-streaming call (watch, keep-alive) as etcd's gateway
/// (grpc-gateway v1) takes them: a first request that cannot be read is the call's error,
/// answered as a plain error with code Unknown (grpc-gateway passes the decoder's error
/// on as it is); a later one only ends the requests — the call goes on with what it has.
async fn gateway_requests<T: DeserializeOwned + Send + 'static>(
    body: Body,
    body_bytes_max: usize,
) -> Result<impl Stream<Item = Result<T, Status>> + Send + Unpin + 'static, Status> {
    let mut requests = streamed_requests::<T>(body, body_bytes_max);
    let first = match requests.next().await {
        Some(Err(status)) => return Err(Status::unknown(status.message())),
        first => first,
    };
    Ok(tonic::codegen::tokio_stream::iter(first).chain(requests).take_while(Result::is_ok))
}

/// A unary route calling `$method` of `$service` (a tonic service trait method).
macro_rules! unary_route {
    ($service:expr, $method:path) => {{
        let service = Arc::new($service);
        post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let service = service.clone();
            async move { unary(headers, body, |request| async move { $method(&*service, request).await }).await }
        })
    }};
}

/// A server-streaming route: one request in the body, a stream of answers.
macro_rules! server_stream_route {
    ($service:expr, $method:path) => {{
        let service = Arc::new($service);
        post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let service = service.clone();
            async move {
                let request = match parse_request(&body) {
                    Ok(request) => request,
                    Err(status) => return error_response(&status),
                };
                match $method(&*service, grpc_request(request, &headers)).await {
                    Ok(answers) => stream_response(answers.into_inner()),
                    Err(status) => error_response(&status),
                }
            }
        })
    }};
}

/// Adds the gateway's routes (under `/v3/` and `/v3beta/`).
pub fn add_routes(mut router: axum::Router, node: NodeHandle, max_request_bytes: usize, bcrypt_cost: u32) -> axum::Router {
    let body_bytes_max = max_request_bytes + GRPC_OVERHEAD_BYTES;
    for prefix in ["/v3", "/v3beta"] {
        let kv = || KvService { node: node.clone() };
        let lease = || LeaseService { node: node.clone() };
        let maintenance = || MaintenanceService { node: node.clone() };
        let cluster = || ClusterService { node: node.clone() };
        let lock = || LockService { node: node.clone() };
        let election = || ElectionService { node: node.clone() };
        let auth = || AuthService { node: node.clone(), bcrypt_cost };
        let watch_node = node.clone();
        let keep_alive_node = node.clone();
        router = router
            .route(&format!("{prefix}/kv/range"), unary_route!(kv(), Kv::range))
            .route(&format!("{prefix}/kv/put"), unary_route!(kv(), Kv::put))
            .route(&format!("{prefix}/kv/deleterange"), unary_route!(kv(), Kv::delete_range))
            .route(&format!("{prefix}/kv/txn"), unary_route!(kv(), Kv::txn))
            .route(&format!("{prefix}/kv/compaction"), unary_route!(kv(), Kv::compact))
            .route(&format!("{prefix}/lease/grant"), unary_route!(lease(), Lease::lease_grant))
            .route(&format!("{prefix}/lease/revoke"), unary_route!(lease(), Lease::lease_revoke))
            .route(&format!("{prefix}/kv/lease/revoke"), unary_route!(lease(), Lease::lease_revoke))
            .route(&format!("{prefix}/lease/timetolive"), unary_route!(lease(), Lease::lease_time_to_live))
            .route(&format!("{prefix}/kv/lease/timetolive"), unary_route!(lease(), Lease::lease_time_to_live))
            .route(&format!("{prefix}/lease/leases"), unary_route!(lease(), Lease::lease_leases))
            .route(&format!("{prefix}/kv/lease/leases"), unary_route!(lease(), Lease::lease_leases))
            .route(
                &format!("{prefix}/lease/keepalive"),
                post(move |headers: axum::http::HeaderMap, body: Body| {
                    let node = keep_alive_node.with_token(token_of(&headers));
                    async move {
                        match gateway_requests(body, body_bytes_max).await {
                            Ok(requests) => stream_response(super::lease::keep_alive_answers(node, requests)),
                            Err(status) => error_response(&status),
                        }
                    }
                }),
            )
            .route(
                &format!("{prefix}/watch"),
                post(move |headers: axum::http::HeaderMap, body: Body| {
                    let node = watch_node.with_token(token_of(&headers));
                    async move {
                        let requests = match gateway_requests(body, body_bytes_max).await {
                            Ok(requests) => requests,
                            Err(status) => return error_response(&status),
                        };
                        match super::watch::open_watch(&node, requests).await {
                            Ok(responses) => stream_response(responses),
                            Err(status) => error_response(&status),
                        }
                    }
                }),
            )
            .route(&format!("{prefix}/maintenance/status"), unary_route!(maintenance(), Maintenance::status))
            .route(&format!("{prefix}/maintenance/alarm"), unary_route!(maintenance(), Maintenance::alarm))
            .route(&format!("{prefix}/maintenance/defragment"), unary_route!(maintenance(), Maintenance::defragment))
            .route(&format!("{prefix}/maintenance/hash"), unary_route!(maintenance(), Maintenance::hash))
            .route(&format!("{prefix}/maintenance/hashkv"), unary_route!(maintenance(), Maintenance::hash_kv))
            .route(&format!("{prefix}/maintenance/transfer-leadership"), unary_route!(maintenance(), Maintenance::move_leader))
            .route(&format!("{prefix}/maintenance/snapshot"), server_stream_route!(maintenance(), Maintenance::snapshot))
            .route(&format!("{prefix}/cluster/member/add"), unary_route!(cluster(), Cluster::member_add))
            .route(&format!("{prefix}/cluster/member/remove"), unary_route!(cluster(), Cluster::member_remove))
            .route(&format!("{prefix}/cluster/member/update"), unary_route!(cluster(), Cluster::member_update))
            .route(&format!("{prefix}/cluster/member/list"), unary_route!(cluster(), Cluster::member_list))
            .route(&format!("{prefix}/cluster/member/promote"), unary_route!(cluster(), Cluster::member_promote))
            .route(&format!("{prefix}/lock/lock"), unary_route!(lock(), Lock::lock))
            .route(&format!("{prefix}/lock/unlock"), unary_route!(lock(), Lock::unlock))
            .route(&format!("{prefix}/election/campaign"), unary_route!(election(), Election::campaign))
            .route(&format!("{prefix}/election/proclaim"), unary_route!(election(), Election::proclaim))
            .route(&format!("{prefix}/election/leader"), unary_route!(election(), Election::leader))
            .route(&format!("{prefix}/election/resign"), unary_route!(election(), Election::resign))
            .route(&format!("{prefix}/election/observe"), server_stream_route!(election(), Election::observe))
            .route(&format!("{prefix}/auth/enable"), unary_route!(auth(), Auth::auth_enable))
            .route(&format!("{prefix}/auth/disable"), unary_route!(auth(), Auth::auth_disable))
            .route(&format!("{prefix}/auth/status"), unary_route!(auth(), Auth::auth_status))
            .route(&format!("{prefix}/auth/authenticate"), unary_route!(auth(), Auth::authenticate))
            .route(&format!("{prefix}/auth/user/add"), unary_route!(auth(), Auth::user_add))
            .route(&format!("{prefix}/auth/user/get"), unary_route!(auth(), Auth::user_get))
            .route(&format!("{prefix}/auth/user/list"), unary_route!(auth(), Auth::user_list))
            .route(&format!("{prefix}/auth/user/delete"), unary_route!(auth(), Auth::user_delete))
            .route(&format!("{prefix}/auth/user/changepw"), unary_route!(auth(), Auth::user_change_password))
            .route(&format!("{prefix}/auth/user/grant"), unary_route!(auth(), Auth::user_grant_role))
            .route(&format!("{prefix}/auth/user/revoke"), unary_route!(auth(), Auth::user_revoke_role))
            .route(&format!("{prefix}/auth/role/add"), unary_route!(auth(), Auth::role_add))
            .route(&format!("{prefix}/auth/role/get"), unary_route!(auth(), Auth::role_get))
            .route(&format!("{prefix}/auth/role/list"), unary_route!(auth(), Auth::role_list))
            .route(&format!("{prefix}/auth/role/delete"), unary_route!(auth(), Auth::role_delete))
            .route(&format!("{prefix}/auth/role/grant"), unary_route!(auth(), Auth::role_grant_permission))
            .route(&format!("{prefix}/auth/role/revoke"), unary_route!(auth(), Auth::role_revoke_permission));
    }
    router.layer(axum::extract::DefaultBodyLimit::max(body_bytes_max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader, StatusResponse};
    use crate::pb::mvccpb::KeyValue;

    #[test]
    fn json_as_etcds_gateway_writes_it() {
        let answer = RangeResponse {
            header: Some(ResponseHeader { cluster_id: 15118495548433857066, member_id: 1, revision: 2, raft_term: 2 }),
            kvs: vec![KeyValue { key: b"foo".to_vec(), create_revision: 2, mod_revision: 2, version: 1, value: bytes::Bytes::from_static(b"bar"), lease: 0 }],
            more: false,
            count: 1,
        };
        assert_eq!(
            to_json(&answer),
            r#"{"header":{"cluster_id":"15118495548433857066","member_id":"1","revision":"2","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#
        );
        let status = StatusResponse { db_size: 24576, raft_index: 9, version: "3.4.0".into(), ..Default::default() };
        assert_eq!(to_json(&status), r#"{"version":"3.4.0","dbSize":"24576","raftIndex":"9"}"#);
    }

    #[test]
    fn requests_in_either_spelling() {
        let request: RangeRequest = parse_request(br#"{"key":"Zm9v","range_end":"Zm9w","sortOrder":"DESCEND","keys_only":true,"unknown":1}"#).unwrap();
        assert_eq!((request.key.as_slice(), request.range_end.as_slice(), request.sort_order, request.keys_only), (&b"foo"[..], &b"fop"[..], 2, true));
        assert_eq!(parse_request::<RangeRequest>(b"  ").unwrap(), RangeRequest::default());
        assert_eq!(parse_request::<RangeRequest>(b"garbage").unwrap_err().code(), Code::InvalidArgument);
    }

    #[test]
    fn errors_as_grpc_gateway() {
        let response = error_response(&Status::not_found("etcdserver: requested lease not found"));
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            stream_error_line(&Status::invalid_argument("bad")),
            "{\"error\":{\"grpc_code\":3,\"http_code\":400,\"message\":\"bad\",\"http_status\":\"Bad Request\"}}\n"
        );
    }
}
