//! The client port's front service: every request on the client port meets it first,
//! before tonic's router.
//!
//! Why it exists: nearly every request a busy member serves is a call of the KV service,
//! and routing one through the router — axum's path match, its boxed route, a counting
//! middleware around every route — cost about 6% of the server's CPU at 64 clients
//! putting (`perf record` of one member, session 17). Here a KV call goes straight to the
//! KV server and everything else on to the router, and every gRPC call is counted for
//! `/metrics` (a KV call through counters resolved once, see `Metrics::grpc_call_started`).
//!
//! It also answers a request over the message size limit as etcd does (grpc-go's
//! ResourceExhausted "grpc: received message larger than max (N vs. M)", where tonic says
//! OutOfRange "Error, decoded message length too large: ..."): clients and operators match
//! on etcd's code and words.
//!
//! Invariant: the router does not hold the KV service; a KV call reaches a `KvService`
//! either here (TLS and HTTP/1.1 connections, and what `direct` hands on) or in
//! `direct`'s connection task, both with the same message size limit and counting.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{header, HeaderMap, HeaderValue, Request, Response};
use tonic::codegen::Service;

use super::metrics::Metrics;
use super::KvService;
use crate::pb::etcdserverpb::kv_server::KvServer;

/// The path prefix of the KV service's methods (`/etcdserverpb.KV/Put`, ...).
pub const KV_PATH_PREFIX: &str = "/etcdserverpb.KV/";

/// Puts a [`Front`] before the router (tonic's `Server::layer`).
#[derive(Clone)]
pub struct FrontLayer {
    pub kv: KvServer<KvService>,
    pub metrics: Arc<Metrics>,
}

impl<S> tower_layer::Layer<S> for FrontLayer {
    type Service = Front<S>;

    fn layer(&self, routes: S) -> Front<S> {
        Front { kv: self.kv.clone(), routes, metrics: self.metrics.clone() }
    }
}

/// See the module's header.
#[derive(Clone)]
pub struct Front<S> {
    kv: KvServer<KvService>,
    routes: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request<Body>> for Front<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are always ready (tonic's generated servers, axum's router); asked anyway,
        // as tower's contract asks before a call.
        match Service::<Request<Body>>::poll_ready(&mut self.kv, cx) {
            Poll::Ready(Ok(())) => self.routes.poll_ready(cx),
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let is_grpc =
            request.headers().get(header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
        let call = is_grpc.then(|| self.metrics.grpc_call_started(request.uri().path()));
        let answer: Self::Future = if request.uri().path().starts_with(KV_PATH_PREFIX) {
            self.kv.call(request)
        } else {
            Box::pin(self.routes.call(request))
        };
        let Some(call) = call else { return answer };
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let mut response = answer.await?;
            answer_oversized_message_as_etcd(response.headers_mut());
            // A call refused or failed at once answers with its status in the headers (a
            // trailers-only response); otherwise it opened with OK (a stream is counted
            // as handled when it opens, with the code it opened with).
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|c| c.to_str().ok())
                .and_then(|c| c.parse::<i32>().ok())
                .unwrap_or(0);
            metrics.grpc_call_handled(&call, code);
            Ok(response)
        })
    }
}

/// tonic's words for a request message over the decoding limit (tonic's codec/decode.rs).
const TONIC_OVERSIZED_MESSAGE_PREFIX: &str = "Error, decoded message length too large: found ";

/// etcd's (grpc-go's) words for a request message of `found` bytes over a `limit`.
fn etcd_oversized_message(tonic_message: &str) -> Option<String> {
    // "N bytes, the limit is: M bytes"
    let rest = tonic_message.strip_prefix(TONIC_OVERSIZED_MESSAGE_PREFIX)?;
    let numbers: Vec<&str> = rest.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).collect();
    let [found, limit] = numbers.as_slice() else { return None };
    Some(format!("grpc: received message larger than max ({found} vs. {limit})"))
}

/// Rewrites a trailers-only answer that refused an oversized request message into
/// etcd's (grpc-go's) status: code 8 and "grpc: received message larger than max (N vs.
/// M)". Anything else is left alone. Returns whether it rewrote.
fn answer_oversized_message_as_etcd(headers: &mut HeaderMap) -> bool {
    if headers.get("grpc-status").map(HeaderValue::as_bytes) != Some(b"11") {
        return false;
    }
    let Some(message) = headers.get("grpc-message").and_then(|m| m.to_str().ok()) else { return false };
    // tonic percent-encodes the message's spaces (and nothing else in these words).
    let Some(etcd_message) = etcd_oversized_message(&message.replace("%20", " ")) else { return false };
    let Ok(etcd_message) = HeaderValue::from_str(&etcd_message) else { return false };
    headers.insert("grpc-status", HeaderValue::from_static("8"));
    headers.insert("grpc-message", etcd_message);
    true
}

/// The status a stream ends with when receiving the client's next request failed:
/// etcd's for an oversized message (as `answer_oversized_message_as_etcd`), otherwise
/// the error itself (etcd ends the stream with the receive error too).
pub(super) fn etcd_receive_error(status: tonic::Status) -> tonic::Status {
    if status.code() != tonic::Code::OutOfRange {
        return status;
    }
    match etcd_oversized_message(status.message()) {
        Some(message) => tonic::Status::resource_exhausted(message),
        None => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::server::NamedService;

    #[test]
    fn an_oversized_message_is_refused_with_etcds_code_and_words() {
        // What tonic 0.14 sends for a 3,000,020-byte message over a 2 MiB limit.
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("11"));
        let tonic_message = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 3000020 bytes, the limit is: 2097152 bytes",
        );
        let encoded = tonic_message.into_http::<()>().headers().get("grpc-message").expect("a message").clone();
        assert!(encoded.to_str().expect("ascii").starts_with("Error,%20decoded%20message"), "{encoded:?}");
        headers.insert("grpc-message", encoded);
        assert!(answer_oversized_message_as_etcd(&mut headers));
        assert_eq!(headers["grpc-status"], "8");
        assert_eq!(headers["grpc-message"], "grpc: received message larger than max (3000020 vs. 2097152)");
        // Any other status is left as it is.
        let mut other = HeaderMap::new();
        other.insert("grpc-status", HeaderValue::from_static("11"));
        other.insert("grpc-message", HeaderValue::from_static("etcdserver:%20mvcc:%20required%20revision%20is%20a%20future%20revision"));
        assert!(!answer_oversized_message_as_etcd(&mut other));
        assert_eq!(other["grpc-status"], "11");
        // The same for a stream's receive error.
        let refused = etcd_receive_error(tonic::Status::out_of_range(
            "Error, decoded message length too large: found 20 bytes, the limit is: 10 bytes",
        ));
        assert_eq!((refused.code(), refused.message()), (tonic::Code::ResourceExhausted, "grpc: received message larger than max (20 vs. 10)"));
        let other = etcd_receive_error(tonic::Status::invalid_argument("request is too large"));
        assert_eq!((other.code(), other.message()), (tonic::Code::InvalidArgument, "request is too large"));
    }

    #[test]
    fn the_kv_prefix_is_the_kv_services_name() {
        assert_eq!(KV_PATH_PREFIX, format!("/{}/", <KvServer<KvService> as NamedService>::NAME));
    }
}
