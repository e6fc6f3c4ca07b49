//! The errors a client can see, with etcd's exact message text and gRPC code.
//!
//! One enum for the client boundary. The gRPC front end maps [`GrpcCode`] onto tonic's
//! codes; the simulator matches on the variants. Messages must stay byte-identical to
//! etcd's: clients (and etcdctl's output) match on them.

/// The gRPC status code a client sees, independent of any gRPC library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcCode {
    InvalidArgument,
    OutOfRange,
    ResourceExhausted,
    NotFound,
    FailedPrecondition,
    Unavailable,
    DataLoss,
    DeadlineExceeded,
    PermissionDenied,
    Unauthenticated,
}

/// A request that failed, as etcd reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtcdError {
    EmptyKey,
    TooManyOps,
    DuplicateKey,
    RequestTooLarge,
    KeyNotFound,
    ValueProvided,
    LeaseProvided,
    Compacted,
    FutureRevision,
    LeaseNotFound,
    LeaseExists,
    LeaseTtlTooLarge,
    NoSpace,
    NoLeader,
    LeaderChanged,
    Timeout,
    Stopped,
    /// etcd's "server stopped" for a request the member refused before proposing it (it
    /// applied its own removal, or its loop is gone): unlike [`EtcdError::Stopped`], the
    /// request certainly did not and will not apply.
    StoppedBeforeProposal,
    TooManyRequests,
    Corrupt,
    /// MoveLeader sent to a member that is not the leader.
    NotLeader,
    /// MoveLeader to a member that is not a voter of the cluster.
    BadLeaderTransferee,
    /// MoveLeader: the target did not become leader in time.
    LeaderTransferTimeout,
    /// Membership: a member with these peer URLs exists already.
    PeerUrlExists,
    /// Membership: no such member.
    MemberNotFound,
    /// Membership: peer URLs that are not `http(s)://host:port`.
    MemberBadUrls,
    /// Membership: promote of a member that is not a learner.
    MemberNotLearner,
    /// Membership: promote of a learner that has not caught up with the leader.
    LearnerNotReady,
    /// Membership: a second learner (etcd allows one).
    TooManyLearners,
    /// Membership (strict reconfiguration check): the change would leave fewer started
    /// voters than a quorum.
    NotEnoughStartedMembers,
    /// Membership: another change is still being applied, or the cluster cannot take
    /// the change now.
    Unhealthy,
    /// Membership: the id of a removed member (ids are never reused).
    MemberIdRemoved,
    /// A learner serves only serializable reads and status.
    NotSupportedForLearner,
    /// Auth: AuthEnable without a `root` user.
    RootUserNotExist,
    /// Auth: AuthEnable while `root` lacks the `root` role.
    RootRoleNotExist,
    UserAlreadyExist,
    /// Auth is enabled and the request carries no user (no token).
    UserEmpty,
    UserNotFound,
    RoleAlreadyExist,
    RoleNotFound,
    RoleEmpty,
    /// Authenticate: unknown user or wrong password.
    AuthFailed,
    PermissionDenied,
    RoleNotGranted,
    PermissionNotGranted,
    AuthNotEnabled,
    InvalidAuthToken,
    /// Deleting `root`, or revoking the `root` role from it, while auth is enabled.
    InvalidAuthMgmt,
    /// The auth state changed between the request's permission check and its apply.
    AuthOldRevision,
}

impl EtcdError {
    pub fn message(&self) -> &'static str {
        match self {
            EtcdError::EmptyKey => "etcdserver: key is not provided",
            EtcdError::TooManyOps => "etcdserver: too many operations in txn request",
            EtcdError::DuplicateKey => "etcdserver: duplicate key given in txn request",
            EtcdError::RequestTooLarge => "etcdserver: request is too large",
            EtcdError::KeyNotFound => "etcdserver: key not found",
            EtcdError::ValueProvided => "etcdserver: value is provided",
            EtcdError::LeaseProvided => "etcdserver: lease is provided",
            EtcdError::Compacted => "etcdserver: mvcc: required revision has been compacted",
            EtcdError::FutureRevision => "etcdserver: mvcc: required revision is a future revision",
            EtcdError::LeaseNotFound => "etcdserver: requested lease not found",
            EtcdError::LeaseExists => "etcdserver: lease already exists",
            EtcdError::LeaseTtlTooLarge => "etcdserver: too large lease TTL",
            EtcdError::NoSpace => "etcdserver: mvcc: database space exceeded",
            EtcdError::NoLeader => "etcdserver: no leader",
            EtcdError::LeaderChanged => "etcdserver: leader changed",
            EtcdError::Timeout => "etcdserver: request timed out",
            EtcdError::Stopped | EtcdError::StoppedBeforeProposal => "etcdserver: server stopped",
            EtcdError::TooManyRequests => "etcdserver: too many requests",
            EtcdError::Corrupt => "etcdserver: corrupt cluster",
            EtcdError::NotLeader => "etcdserver: not leader",
            EtcdError::BadLeaderTransferee => "etcdserver: bad leader transferee",
            EtcdError::LeaderTransferTimeout => "etcdserver: request timed out, leader transfer took too long",
            EtcdError::PeerUrlExists => "etcdserver: Peer URLs already exists",
            EtcdError::MemberNotFound => "etcdserver: member not found",
            EtcdError::MemberBadUrls => "etcdserver: given member URLs are invalid",
            EtcdError::MemberNotLearner => "etcdserver: can only promote a learner member",
            EtcdError::LearnerNotReady => "etcdserver: can only promote a learner member which is in sync with leader",
            EtcdError::TooManyLearners => "etcdserver: too many learner members in cluster",
            EtcdError::NotEnoughStartedMembers => "etcdserver: re-configuration failed due to not enough started members",
            EtcdError::Unhealthy => "etcdserver: unhealthy cluster",
            EtcdError::MemberIdRemoved => "etcdserver: ID removed",
            EtcdError::NotSupportedForLearner => "etcdserver: rpc not supported for learner",
            EtcdError::RootUserNotExist => "etcdserver: root user does not exist",
            EtcdError::RootRoleNotExist => "etcdserver: root user does not have root role",
            EtcdError::UserAlreadyExist => "etcdserver: user name already exists",
            EtcdError::UserEmpty => "etcdserver: user name is empty",
            EtcdError::UserNotFound => "etcdserver: user name not found",
            EtcdError::RoleAlreadyExist => "etcdserver: role name already exists",
            EtcdError::RoleNotFound => "etcdserver: role name not found",
            EtcdError::RoleEmpty => "etcdserver: role name is empty",
            EtcdError::AuthFailed => "etcdserver: authentication failed, invalid user ID or password",
            EtcdError::PermissionDenied => "etcdserver: permission denied",
            EtcdError::RoleNotGranted => "etcdserver: role is not granted to the user",
            EtcdError::PermissionNotGranted => "etcdserver: permission is not granted to the role",
            EtcdError::AuthNotEnabled => "etcdserver: authentication is not enabled",
            EtcdError::InvalidAuthToken => "etcdserver: invalid auth token",
            EtcdError::InvalidAuthMgmt => "etcdserver: invalid auth management",
            EtcdError::AuthOldRevision => "etcdserver: revision of auth store is old",
        }
    }

    pub fn code(&self) -> GrpcCode {
        match self {
            EtcdError::EmptyKey
            | EtcdError::TooManyOps
            | EtcdError::DuplicateKey
            | EtcdError::RequestTooLarge
            | EtcdError::KeyNotFound
            | EtcdError::ValueProvided
            | EtcdError::LeaseProvided => GrpcCode::InvalidArgument,
            EtcdError::Compacted | EtcdError::FutureRevision | EtcdError::LeaseTtlTooLarge => GrpcCode::OutOfRange,
            EtcdError::LeaseNotFound => GrpcCode::NotFound,
            EtcdError::LeaseExists => GrpcCode::FailedPrecondition,
            EtcdError::TooManyRequests | EtcdError::NoSpace => GrpcCode::ResourceExhausted,
            EtcdError::NoLeader | EtcdError::LeaderChanged | EtcdError::Timeout | EtcdError::Stopped | EtcdError::StoppedBeforeProposal => {
                GrpcCode::Unavailable
            }
            EtcdError::Corrupt => GrpcCode::DataLoss,
            EtcdError::NotLeader | EtcdError::BadLeaderTransferee => GrpcCode::FailedPrecondition,
            EtcdError::LeaderTransferTimeout => GrpcCode::DeadlineExceeded,
            EtcdError::MemberBadUrls => GrpcCode::InvalidArgument,
            EtcdError::MemberNotFound => GrpcCode::NotFound,
            EtcdError::PeerUrlExists
            | EtcdError::MemberNotLearner
            | EtcdError::LearnerNotReady
            | EtcdError::TooManyLearners
            | EtcdError::NotEnoughStartedMembers
            | EtcdError::MemberIdRemoved => GrpcCode::FailedPrecondition,
            EtcdError::Unhealthy | EtcdError::NotSupportedForLearner => GrpcCode::Unavailable,
            EtcdError::UserEmpty | EtcdError::RoleEmpty | EtcdError::AuthFailed | EtcdError::InvalidAuthMgmt | EtcdError::AuthOldRevision => {
                GrpcCode::InvalidArgument
            }
            EtcdError::RootUserNotExist
            | EtcdError::RootRoleNotExist
            | EtcdError::UserAlreadyExist
            | EtcdError::UserNotFound
            | EtcdError::RoleAlreadyExist
            | EtcdError::RoleNotFound
            | EtcdError::RoleNotGranted
            | EtcdError::PermissionNotGranted
            | EtcdError::AuthNotEnabled => GrpcCode::FailedPrecondition,
            EtcdError::PermissionDenied => GrpcCode::PermissionDenied,
            EtcdError::InvalidAuthToken => GrpcCode::Unauthenticated,
        }
    }

    /// Whether the request may have taken effect although it failed (the client must
    /// treat its outcome as unknown).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, EtcdError::Timeout | EtcdError::LeaderChanged | EtcdError::Stopped)
    }
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for EtcdError {}
