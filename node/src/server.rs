//! The thin async shell around [`NodeCore`]: one task owns the core and feeds it ticks,
//! peer messages and client requests, then lets it handle raft's Ready.
//!
//! The same code runs in production (tokio) and in the simulator (madsim-tokio swaps in
//! virtual time and a deterministic scheduler). `select!` is always `biased`: tokio's
//! default random branch choice would draw from an unseeded generator.
//!
//! The shell also owns the member's [`WatchHub`]: after every Ready it publishes the
//! changes the core applied, and lets unsynced watchers catch up a bounded step.

use tokio::sync::{mpsc, oneshot};

use raft::eraftpb::Message;

use crate::apply::{AuthRequest, AuthResponse, Request, Response};
use crate::auth::Credentials;
use crate::consensus::{FatalError, NodeConfig, NodeCore, NodeStatus};
use crate::env::{Env, Worker};
use crate::errors::EtcdError;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, PutRequest,
    AlarmRequest, AlarmResponse,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse, WatchRequest, WatchResponse,
};
use crate::watch::{WatchHub, WATCH_STREAM_RESPONSES_MAX};

/// Peer messages queued for the member before senders wait.
pub const PEER_INBOX_MESSAGES_MAX: usize = 4096;
/// Client commands queued for the member before new ones are refused.
pub const CLIENT_QUEUE_COMMANDS_MAX: usize = 8192;

enum Command {
    Request(Request, Credentials, oneshot::Sender<Result<Response, EtcdError>>),
    Authorize(Credentials, crate::auth::Needed, oneshot::Sender<Result<(), EtcdError>>),
    Status(oneshot::Sender<NodeStatus>),
    MemberList(oneshot::Sender<(NodeStatus, Vec<crate::pb::etcdserverpb::Member>)>),
    HashKv(i64, oneshot::Sender<Result<(i64, u32, i64), EtcdError>>),
    StateDigest(oneshot::Sender<(i64, u64)>),
    ClientSnapshot(oneshot::Sender<(i64, Vec<u8>)>),
    Defragment(oneshot::Sender<()>),
    MoveLeader(u64, oneshot::Sender<Result<(), EtcdError>>),
    Campaign,
    #[cfg(madsim)]
    CorruptMemory(Vec<u8>, oneshot::Sender<Option<Vec<u8>>>),
    WatchOpen(mpsc::Sender<WatchResponse>, oneshot::Sender<Result<u64, EtcdError>>),
    Watch(u64, Credentials, WatchRequest),
}

/// How clients (the gRPC front end, the simulator's workload) talk to a running member.
/// Cheap to clone. When the member stops, every call fails with "server stopped".
#[derive(Clone)]
pub struct NodeHandle {
    member_id: u64,
    commands: mpsc::Sender<Command>,
    /// Who the client is (etcd's `token` metadata, or its certificate's name), sent with
    /// every request.
    credentials: Credentials,
}

/// Where peers deliver raft messages to a running member.
pub type PeerInbox = mpsc::Sender<Message>;

impl NodeHandle {
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// This handle for a client that authenticated: its requests carry `token`.
    pub fn with_token(&self, token: Option<String>) -> NodeHandle {
        self.with_credentials(token.map_or(Credentials::None, Credentials::Token))
    }

    /// This handle for a client with `credentials`.
    pub fn with_credentials(&self, credentials: Credentials) -> NodeHandle {
        NodeHandle { credentials, ..self.clone() }
    }

    /// Whether this handle's client may do what `needed` says (the root role for
    /// maintenance requests), on the member's applied auth state.
    pub async fn authorize(&self, needed: crate::auth::Needed) -> Result<(), EtcdError> {
        let (sender, receiver) = oneshot::channel();
        self.commands.send(Command::Authorize(self.credentials.clone(), needed, sender)).await.map_err(|_| EtcdError::Stopped)?;
        receiver.await.map_err(|_| EtcdError::Stopped)?
    }

    async fn call(&self, request: Request) -> Result<Response, EtcdError> {
        let (sender, receiver) = oneshot::channel();
        self.commands.try_send(Command::Request(request, self.credentials.clone(), sender)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => EtcdError::TooManyRequests,
            mpsc::error::TrySendError::Closed(_) => EtcdError::StoppedBeforeProposal,
        })?;
        receiver.await.map_err(|_| EtcdError::Stopped)?
    }

    /// The member's current status, or `None` if it has stopped.
    pub async fn status(&self) -> Option<NodeStatus> {
        let (sender, receiver) = oneshot::channel();
        self.commands.send(Command::Status(sender)).await.ok()?;
        receiver.await.ok()
    }

    /// etcd's MemberList as this member knows it (served locally, as etcd 3.4), with the
    /// member's status for the header.
    pub async fn member_list(&self) -> Option<(NodeStatus, Vec<crate::pb::etcdserverpb::Member>)> {
        let (sender, receiver) = oneshot::channel();
        self.commands.send(Command::MemberList(sender)).await.ok()?;
        receiver.await.ok()
    }

    /// etcd's HashKV on this member: (revision covered, hash, compaction point). Walks
    /// a frozen copy of the whole store on the env's worker, not on the member's loop.
    pub async fn hash_kv(&self, revision: i64) -> Result<(i64, u32, i64), EtcdError> {
        let (sender, receiver) = oneshot::channel();
        self.commands.send(Command::HashKv(revision, sender)).await.map_err(|_| EtcdError::Stopped)?;
        receiver.await.map_err(|_| EtcdError::Stopped)?
    }

    /// A point-in-time copy of the member's applied state in the client snapshot format
    /// (`storage::client_snapshot`), with its revision.
    pub async fn client_snapshot(&self) -> Result<(i64, Vec<u8>), EtcdError> {
        let (sender, receiver) = oneshot::channel();
        self.commands.send(Command::ClientSnapshot(sender)).await.map_err(|_| EtcdError::Stopped)?;
        receiver.await.map_err(|_| EtcdError::Stopped)
    }

    /// A digest of the member's whole replicated state (keys and leases) with its
    /// revision, or `None` if it has stopped. Walks the whole store.
    pub async fn state_digest(&self) -> Option<(i64, u64)> {
        let (sender, receiver) = oneshot::channel();
        self.commands.send(Command::StateDigest(sender)).await.ok()?;
        receiver.await.ok()
    }

    /// etcd's Defragment on this member.
    pub async fn defragment(&self) -> Result<(), EtcdError> {
        let (sender, receiver) = oneshot::channel();
        self.commands.send(Command::Defragment(sender)).await.map_err(|_| EtcdError::Stopped)?;
        receiver.await.map_err(|_| EtcdError::Stopped)
    }

    /// The simulator's memory-corruption fault: flips a byte of the value of the first
    /// live key with `prefix` in this member's memory. The key, if there was one.
    #[cfg(madsim)]
    pub async fn corrupt_memory_for_simulation(&self, prefix: &[u8]) -> Option<Vec<u8>> {
        let (sender, receiver) = oneshot::channel();
        self.commands.send(Command::CorruptMemory(prefix.to_vec(), sender)).await.ok()?;
        receiver.await.ok().flatten()
    }

    /// A membership change (etcd's MemberAdd, MemberRemove, MemberUpdate, MemberPromote):
    /// the member as the applied change left it (an added member with its new id).
    pub async fn change_membership(&self, request: crate::apply::MemberRequest) -> Result<crate::pb::etcdserverpb::Member, EtcdError> {
        match self.call(Request::Member(request)).await? {
            Response::Member(member) => Ok(member),
            other => panic!("a membership change answered with {other:?}"),
        }
    }

    /// etcd's MoveLeader, sent to this member (which must be the leader): `Ok` once the
    /// target leads.
    pub async fn move_leader(&self, target: u64) -> Result<(), EtcdError> {
        let (sender, receiver) = oneshot::channel();
        self.commands.send(Command::MoveLeader(target, sender)).await.map_err(|_| EtcdError::Stopped)?;
        receiver.await.map_err(|_| EtcdError::Stopped)?
    }

    /// Asks the member to start an election now.
    pub async fn campaign(&self) {
        let _ = self.commands.send(Command::Campaign).await;
    }

    /// Opens a watch stream on this member: send create/cancel/progress requests with
    /// [`WatchStream::request`], read responses with [`WatchStream::next`]. The stream
    /// ends (`next` gives `None`) when the member stops; dropping it cancels its watchers.
    pub async fn watch(&self) -> Result<WatchStream, EtcdError> {
        let (sender, responses) = mpsc::channel(WATCH_STREAM_RESPONSES_MAX);
        let (reply, opened) = oneshot::channel();
        self.commands.send(Command::WatchOpen(sender, reply)).await.map_err(|_| EtcdError::Stopped)?;
        let stream_id = opened.await.map_err(|_| EtcdError::Stopped)??;
        Ok(WatchStream { requests: WatchRequests { stream_id, commands: self.commands.clone(), credentials: self.credentials.clone() }, responses })
    }
}

/// The typed client calls: each sends its request and unwraps the matching answer.
macro_rules! typed_calls {
    ($($(#[$doc:meta])* $name:ident($request:ty) -> $response:ty = $variant:ident;)*) => {
        impl NodeHandle {
            $(
                $(#[$doc])*
                pub async fn $name(&self, request: $request) -> Result<$response, EtcdError> {
                    match self.call(Request::$variant(request)).await? {
                        Response::$variant(response) => Ok(response),
                        other => unreachable!(concat!(stringify!($name), " answered with {:?}"), other),
                    }
                }
            )*
        }
    };
}

typed_calls! {
    range(RangeRequest) -> RangeResponse = Range;
    put(PutRequest) -> PutResponse = Put;
    delete_range(DeleteRangeRequest) -> DeleteRangeResponse = DeleteRange;
    txn(TxnRequest) -> TxnResponse = Txn;
    compact(CompactionRequest) -> CompactionResponse = Compact;
    lease_grant(LeaseGrantRequest) -> LeaseGrantResponse = LeaseGrant;
    lease_revoke(LeaseRevokeRequest) -> LeaseRevokeResponse = LeaseRevoke;
    /// One keep-alive: renews the lease (TTL 0 in the answer: no such lease).
    lease_keep_alive(LeaseKeepAliveRequest) -> LeaseKeepAliveResponse = LeaseKeepAlive;
    lease_time_to_live(LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse = LeaseTimeToLive;
    lease_leases(LeaseLeasesRequest) -> LeaseLeasesResponse = LeaseLeases;
    /// etcd's Alarm: GET lists active alarms, ACTIVATE/DEACTIVATE change them.
    alarm(AlarmRequest) -> AlarmResponse = Alarm;
}

/// The Auth service's calls: each sends its request and unwraps the matching answer.
macro_rules! auth_calls {
    ($($(#[$doc:meta])* $name:ident($request:ty) -> $response:ty = $variant:ident;)*) => {
        impl NodeHandle {
            $(
                $(#[$doc])*
                pub async fn $name(&self, request: $request) -> Result<$response, EtcdError> {
                    match self.call(Request::Auth(AuthRequest::$variant(request))).await? {
                        Response::Auth(AuthResponse::$variant(response)) => Ok(response),
                        other => unreachable!(concat!(stringify!($name), " answered with {:?}"), other),
                    }
                }
            )*
        }
    };
}

auth_calls! {
    /// AuthEnable, with the secret that will sign tokens.
    auth_enable(crate::pb::detcdpb::AuthEnable) -> crate::pb::etcdserverpb::AuthEnableResponse = Enable;
    auth_disable(crate::pb::etcdserverpb::AuthDisableRequest) -> crate::pb::etcdserverpb::AuthDisableResponse = Disable;
    auth_status(crate::pb::etcdserverpb::AuthStatusRequest) -> crate::pb::etcdserverpb::AuthStatusResponse = Status;
    /// UserAdd: `hashed_password` filled (bcrypt), `password` ignored.
    user_add(crate::pb::etcdserverpb::AuthUserAddRequest) -> crate::pb::etcdserverpb::AuthUserAddResponse = UserAdd;
    user_get(crate::pb::etcdserverpb::AuthUserGetRequest) -> crate::pb::etcdserverpb::AuthUserGetResponse = UserGet;
    user_list(crate::pb::etcdserverpb::AuthUserListRequest) -> crate::pb::etcdserverpb::AuthUserListResponse = UserList;
    user_delete(crate::pb::etcdserverpb::AuthUserDeleteRequest) -> crate::pb::etcdserverpb::AuthUserDeleteResponse = UserDelete;
    /// UserChangePassword: `hashed_password` filled (bcrypt), `password` ignored.
    user_change_password(crate::pb::etcdserverpb::AuthUserChangePasswordRequest) -> crate::pb::etcdserverpb::AuthUserChangePasswordResponse = UserChangePassword;
    user_grant_role(crate::pb::etcdserverpb::AuthUserGrantRoleRequest) -> crate::pb::etcdserverpb::AuthUserGrantRoleResponse = UserGrantRole;
    user_revoke_role(crate::pb::etcdserverpb::AuthUserRevokeRoleRequest) -> crate::pb::etcdserverpb::AuthUserRevokeRoleResponse = UserRevokeRole;
    role_add(crate::pb::etcdserverpb::AuthRoleAddRequest) -> crate::pb::etcdserverpb::AuthRoleAddResponse = RoleAdd;
    role_get(crate::pb::etcdserverpb::AuthRoleGetRequest) -> crate::pb::etcdserverpb::AuthRoleGetResponse = RoleGet;
    role_list(crate::pb::etcdserverpb::AuthRoleListRequest) -> crate::pb::etcdserverpb::AuthRoleListResponse = RoleList;
    role_delete(crate::pb::etcdserverpb::AuthRoleDeleteRequest) -> crate::pb::etcdserverpb::AuthRoleDeleteResponse = RoleDelete;
    role_grant_permission(crate::pb::etcdserverpb::AuthRoleGrantPermissionRequest) -> crate::pb::etcdserverpb::AuthRoleGrantPermissionResponse = RoleGrantPermission;
    role_revoke_permission(crate::pb::etcdserverpb::AuthRoleRevokePermissionRequest) -> crate::pb::etcdserverpb::AuthRoleRevokePermissionResponse = RoleRevokePermission;
    /// Authenticate, step one (linearizable): the user's password hash and token epoch.
    auth_login_info(crate::pb::detcdpb::LoginInfoRequest) -> crate::pb::detcdpb::LoginInfo = LoginInfo;
    /// Authenticate, step two: a token, if the token epoch is still the one checked.
    auth_token(crate::pb::detcdpb::TokenRequest) -> crate::pb::etcdserverpb::AuthenticateResponse = Token;
}

/// Where a watch stream's requests go; cheap to clone.
#[derive(Clone)]
pub struct WatchRequests {
    stream_id: u64,
    commands: mpsc::Sender<Command>,
    credentials: Credentials,
}

impl WatchRequests {
    /// Sends one request on the stream (answered on the stream's responses).
    pub async fn request(&self, request: WatchRequest) -> Result<(), EtcdError> {
        self.commands.send(Command::Watch(self.stream_id, self.credentials.clone(), request)).await.map_err(|_| EtcdError::Stopped)
    }
}

/// A watch stream on a member. See [`NodeHandle::watch`].
pub struct WatchStream {
    requests: WatchRequests,
    responses: mpsc::Receiver<WatchResponse>,
}

impl WatchStream {
    pub async fn request(&self, request: WatchRequest) -> Result<(), EtcdError> {
        self.requests.request(request).await
    }

    /// The next response, or `None` once the member stopped or dropped the stream.
    pub async fn next(&mut self) -> Option<WatchResponse> {
        self.responses.recv().await
    }

    /// The two halves, for front ends that read requests and write responses apart.
    pub fn split(self) -> (WatchRequests, mpsc::Receiver<WatchResponse>) {
        (self.requests, self.responses)
    }
}

/// A member ready to run: its handle and inbox exist before its loop starts, so the
/// caller can wire them into the transport and the client front end.
pub struct Node {
    core: NodeCore,
    env: Env,
    inbox: mpsc::Receiver<Message>,
    commands: mpsc::Receiver<Command>,
}

impl Node {
    /// Opens the member's state (WAL replay, snapshot load) and prepares its channels.
    pub fn open(config: NodeConfig, env: Env) -> Result<(Node, NodeHandle, PeerInbox), FatalError> {
        let member_id = config.member_id;
        let core = NodeCore::open(config, env.clone())?;
        let (inbox_sender, inbox) = mpsc::channel(PEER_INBOX_MESSAGES_MAX);
        let (command_sender, commands) = mpsc::channel(CLIENT_QUEUE_COMMANDS_MAX);
        let handle = NodeHandle { member_id, commands: command_sender, credentials: Credentials::None };
        Ok((Node { core, env, inbox, commands }, handle, inbox_sender))
    }

    /// Runs the member until a fatal error (or until every handle and inbox sender is
    /// gone). Returns the error that stopped it.
    pub async fn run(self) -> Result<(), FatalError> {
        let Node { mut core, env, mut inbox, mut commands } = self;
        let clock = env.clock.clone();
        let tick_ms = core.config().heartbeat_interval_ms;
        let progress_ms = core.config().watch_progress_notify_interval_ms.max(1);
        let peer_messages_per_turn_max = core.config().tunables.loop_peer_messages_per_turn_max.max(1);
        let commands_per_turn_max = core.config().tunables.loop_commands_per_turn_max.max(1);
        #[allow(unused_mut)]
        let mut hub = WatchHub::with_limits(core.config().watch_limits());
        #[cfg(madsim)]
        hub.plant(crate::watch::WatchPlantedBugs {
            skip_on_catch_up: core.config().planted_bug == Some(crate::consensus::PlantedBug::WatchSkipOnCatchUp),
            start_off_by_one: core.config().planted_bug == Some(crate::consensus::PlantedBug::WatchStartOffByOne),
            fragment_drops_boundary_event: core.config().planted_bug == Some(crate::consensus::PlantedBug::WatchFragmentDropsBoundaryEvent),
        });
        core.enable_change_feed();
        // Apply what the WAL says is committed before serving anything, so a restarted
        // member never answers from a state older than the one it had acknowledged.
        core.apply_committed_backlog()?;
        let _ = core.take_changes();
        let mut next_tick = clock.sleep_ms(tick_ms);
        let mut next_progress = clock.sleep_ms(progress_ms);
        loop {
            // Committed entries still to apply (raft hands them out in bounded batches):
            // this turn does not wait for an event, it only lets other tasks run first.
            let backlog = core.has_committed_unapplied();
            tokio::select! {
                biased;
                _ = &mut next_tick => {
                    core.tick(clock.now_ms());
                    next_tick = clock.sleep_ms(tick_ms);
                }
                _ = &mut next_progress => {
                    hub.progress_tick(core.state().mvcc(), &core.current_header());
                    next_progress = clock.sleep_ms(progress_ms);
                }
                message = inbox.recv() => match message {
                    Some(message) => core.step(message),
                    None => return Ok(()),
                },
                command = commands.recv() => match command {
                    Some(command) => run_command(&mut core, &mut hub, env.worker.as_ref(), command, clock.now_ms()),
                    None => return Ok(()),
                },
                _ = tokio::task::yield_now(), if backlog => {}
            }
            let turn_start_ms = clock.now_ms();
            for _ in 0..peer_messages_per_turn_max {
                match inbox.try_recv() {
                    Ok(message) => core.step(message),
                    Err(_) => break,
                }
            }
            let now_ms = clock.now_ms();
            for _ in 0..commands_per_turn_max {
                match commands.try_recv() {
                    Ok(command) => run_command(&mut core, &mut hub, env.worker.as_ref(), command, now_ms),
                    Err(_) => break,
                }
            }
            core.issue_reads();
            if core.begin_ready()? {
                // The leader's appends wait in its peers' writer tasks, woken from here
                // onto this worker: let them write before the sync blocks it (see
                // `NodeCore::begin_ready`).
                tokio::task::yield_now().await;
            }
            core.finish_ready()?;
            publish_changes(&mut core, &mut hub);
            core.note_loop_turn(clock.now_ms().saturating_sub(turn_start_ms));
        }
    }
}

/// Hands what the core applied to the watchers, then lets lagging ones catch up a step.
fn publish_changes(core: &mut NodeCore, hub: &mut WatchHub) {
    let (changes, gap) = core.take_changes();
    let header = core.current_header();
    if gap {
        hub.resync_all();
    }
    for (revision, events) in &changes {
        hub.publish(*revision, events, &header);
    }
    hub.sync_step(core.state().mvcc(), &header);
}

fn run_command(core: &mut NodeCore, hub: &mut WatchHub, worker: &dyn Worker, command: Command, now_ms: u64) {
    match command {
        Command::WatchOpen(sender, reply) => {
            let _ = reply.send(hub.open_stream(sender));
        }
        // Every change was published right after the Ready that applied it, so the hub
        // is current: nothing applied is pending here.
        Command::Watch(stream_id, credentials, request) => {
            use crate::pb::etcdserverpb::watch_request::RequestUnion;
            if let Some(RequestUnion::CreateRequest(create)) = &request.request_union {
                // etcd checks read permission on the watched range when the watch is created.
                let needed = crate::auth::Needed::Read { key: create.key.clone(), range_end: create.range_end.clone() };
                if let Err(denied) = core.authorize(&credentials, &[needed]) {
                    hub.refuse_create(stream_id, create.watch_id, denied.message(), core.state().mvcc(), &core.current_header());
                    return;
                }
            }
            hub.handle(stream_id, request, core.state().mvcc(), &core.current_header())
        }
        Command::Request(request, credentials, responder) => core.submit_with_credentials(request, &credentials, responder, now_ms),
        Command::Authorize(credentials, needed, responder) => {
            let _ = responder.send(core.authorize(&credentials, &[needed]));
        }
        Command::Status(responder) => {
            let _ = responder.send(core.status());
        }
        Command::MemberList(responder) => {
            let _ = responder.send((core.status(), core.member_list()));
        }
        // Walks of the whole store run on the worker over a frozen copy.
        Command::HashKv(revision, responder) => match core.hash_kv_job(revision) {
            Ok(job) => worker.run(Box::new(move || {
                let _ = responder.send(Ok(job.run()));
            })),
            Err(error) => {
                let _ = responder.send(Err(error));
            }
        },
        Command::StateDigest(responder) => {
            let _ = responder.send(core.state_digest());
        }
        Command::ClientSnapshot(responder) => {
            let (revision, frozen) = core.client_snapshot_state();
            worker.run(Box::new(move || {
                let _ = responder.send((revision, crate::storage::client_snapshot::encode(&frozen)));
            }));
        }
        Command::Defragment(responder) => {
            core.defragment();
            let _ = responder.send(());
        }
        Command::Campaign => core.campaign(),
        Command::MoveLeader(target, answer) => core.move_leader(target, answer, now_ms),
        #[cfg(madsim)]
        Command::CorruptMemory(prefix, responder) => {
            let _ = responder.send(core.corrupt_memory_for_simulation(&prefix));
        }
    }
}
