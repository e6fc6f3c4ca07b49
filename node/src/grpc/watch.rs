//! etcd's `Watch` service: one bidirectional stream per client call, carrying many
//! watchers. Requests are forwarded to the member's watch hub in order; responses are
//! the hub's stream, ended when the member stops or the client goes away.

use std::pin::Pin;

use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::to_status;
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::etcdserverpb::{WatchRequest, WatchResponse};
use crate::server::NodeHandle;

/// The Watch service.
pub struct WatchService {
    pub(super) node: NodeHandle,
}

/// Whether the client asked to be refused when the member has no leader (etcd clients
/// set the `hasleader` metadata with `WithRequireLeader`; etcdctl watch does).
fn requires_leader<T>(request: &Request<T>) -> bool {
    request.metadata().get("hasleader").and_then(|v| v.to_str().ok()) == Some("true")
}

type WatchResponses = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchResponses;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        if requires_leader(&request) {
            let status = self.node.status().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
            if status.leader_id == 0 {
                return Err(to_status(EtcdError::NoLeader));
            }
        }
        let (requests, responses) = self.node.watch().await.map_err(to_status)?.split();
        let mut incoming = request.into_inner();
        tokio::spawn(async move {
            while let Some(Ok(request)) = incoming.next().await {
                if requests.request(request).await.is_err() {
                    return;
                }
            }
        });
        let outgoing = ReceiverStream::new(responses).map(Ok);
        Ok(Response::new(Box::pin(outgoing)))
    }
}
