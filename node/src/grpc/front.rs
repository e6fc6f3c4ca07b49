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
//! Invariant: the KV service is served only here (the router does not hold it), so the
//! same KV server — its message size limits included — answers every KV call.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http::{header, Request, Response};
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
            let response = answer.await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::server::NamedService;

    #[test]
    fn the_kv_prefix_is_the_kv_services_name() {
        assert_eq!(KV_PATH_PREFIX, format!("/{}/", <KvServer<KvService> as NamedService>::NAME));
    }
}
