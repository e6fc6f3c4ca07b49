//! etcd's `Watch` service: one bidirectional stream per client call, carrying many
//! watchers. Requests are forwarded to the member's watch hub in order; responses are
//! the hub's stream, ended when the member stops or the client goes away, or with the
//! receive error when a request cannot be received (an oversized one: etcd's
//! ResourceExhausted), as etcd ends it.
//!
//! A client that asked for a leader (`hasleader` metadata, clientv3's
//! `WithRequireLeader`; etcdctl watch does) is refused when the member has none, and —
//! as etcd's `monitorLeader` does — its open stream ends with "etcdserver: no leader"
//! once the member has been without a leader for [`NO_LEADER_CHECKS_MAX`] checks in a
//! row, so the client resumes on a member that can still see the cluster.

use std::pin::Pin;

use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::to_status;
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::etcdserverpb::{WatchRequest, WatchResponse};
use crate::server::NodeHandle;

/// Opens a watch stream on the member's hub fed by `incoming` (for gRPC and the JSON
/// gateway alike): the hub's responses, ended by the client's failure if receiving its
/// requests failed.
pub(super) async fn open_watch<S>(node: &NodeHandle, mut incoming: S) -> Result<WatchOutgoing, Status>
where
    S: Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
{
    let (requests, responses) = node.watch().await.map_err(to_status)?.split();
    let (failure_sender, failure) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        loop {
            match incoming.next().await {
                Some(Ok(request)) => {
                    if requests.request(request).await.is_err() {
                        return;
                    }
                }
                Some(Err(status)) => {
                    let _ = failure_sender.send(super::front::etcd_receive_error(status));
                    return;
                }
                // The client closed its side: its watches go on (as etcd's).
                None => return,
            }
        }
    });
    Ok(WatchOutgoing { responses, failure: Some(failure), ended: false })
}

/// One watch stream's outgoing side: the hub's responses, and the end of the stream with
/// an error when receiving the client's requests failed — etcd ends the stream with the
/// receive error (grpc-go's ResourceExhausted for an oversized request) instead of
/// leaving the client waiting. (The JSON gateway hands over no such error: see
/// `gateway::gateway_requests`.)
pub(super) struct WatchOutgoing {
    responses: tokio::sync::mpsc::Receiver<WatchResponse>,
    failure: Option<tokio::sync::oneshot::Receiver<Status>>,
    ended: bool,
}

impl Stream for WatchOutgoing {
    type Item = Result<WatchResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future;
        use std::task::Poll;
        let outgoing = self.get_mut();
        if outgoing.ended {
            return Poll::Ready(None);
        }
        if let Some(failure) = outgoing.failure.as_mut() {
            match Pin::new(failure).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    outgoing.ended = true;
                    outgoing.failure = None;
                    return Poll::Ready(Some(Err(status)));
                }
                // The requests ended without failing.
                Poll::Ready(Err(_)) => outgoing.failure = None,
                Poll::Pending => {}
            }
        }
        outgoing.responses.poll_recv(cx).map(|response| response.map(Ok))
    }
}

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

/// How often a require-leader stream checks that its member still has a leader.
pub const LEADER_CHECK_INTERVAL_MS: u64 = 1000;
/// Consecutive checks without a leader before a require-leader stream is ended (etcd
/// waits a few election timeouts).
pub const NO_LEADER_CHECKS_MAX: u32 = 3;
/// Responses buffered between the hub's stream and the client's.
const FORWARDED_RESPONSES_MAX: usize = 64;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchResponses;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let node = super::client_node(&self.node, &request);
        let require_leader = requires_leader(&request);
        if require_leader {
            let status = node.status().await.ok_or_else(|| to_status(EtcdError::Stopped))?;
            if status.leader_id == 0 {
                return Err(to_status(EtcdError::NoLeader));
            }
        }
        let mut responses = open_watch(&node, request.into_inner()).await?;
        if !require_leader {
            return Ok(Response::new(Box::pin(responses)));
        }
        // Forward the hub's responses, ending the stream if the leader stays gone.
        let (sender, outgoing) = tokio::sync::mpsc::channel(FORWARDED_RESPONSES_MAX);
        let node = node.clone();
        tokio::spawn(async move {
            let mut leaderless_checks = 0;
            let mut check = tokio::time::interval(std::time::Duration::from_millis(LEADER_CHECK_INTERVAL_MS));
            loop {
                tokio::select! {
                    biased;
                    response = responses.next() => match response {
                        Some(response) => {
                            let failed = response.is_err();
                            if sender.send(response).await.is_err() || failed {
                                return;
                            }
                        }
                        None => return,
                    },
                    _ = check.tick() => {
                        let has_leader = node.status().await.is_some_and(|s| s.leader_id != 0);
                        leaderless_checks = if has_leader { 0 } else { leaderless_checks + 1 };
                        if leaderless_checks >= NO_LEADER_CHECKS_MAX {
                            let _ = sender.send(Err(to_status(EtcdError::NoLeader))).await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(outgoing))))
    }
}
