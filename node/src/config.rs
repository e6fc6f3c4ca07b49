//! The `detcd` command line: etcd's flag names, `ETCD_*` environment variables and
//! defaults, checked into a [`ServerConfig`] with etcd's error messages for nonsense.

use std::collections::BTreeMap;

use clap::Parser;

use crate::consensus::NodeConfig;
use crate::storage::wal::WAL_RECORD_BYTES_MAX;

/// The largest `--max-request-bytes` accepted: a request travels in one WAL record (with
/// the entry's and the record's own few bytes around it), and that record must still
/// pass replay's length check.
pub const MAX_REQUEST_BYTES_LIMIT: usize = WAL_RECORD_BYTES_MAX - 64 * 1024;
use crate::ids;
use crate::tls::TlsFiles;

/// etcd-compatible member flags (each also read from its `ETCD_*` variable).
#[derive(Parser, Debug, Clone)]
#[command(name = "detcd", version, about = "An etcd v3 compatible key-value server, tested by deterministic simulation")]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: ${name}.etcd).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<String>,
    /// Path to the dedicated WAL directory.
    #[arg(long, env = "ETCD_WAL_DIR", default_value = "")]
    pub wal_dir: String,
    /// List of URLs to listen on for client traffic.
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS")]
    pub listen_client_urls: Option<String>,
    /// List of this member's client URLs to advertise to the public.
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,
    /// List of additional URLs to listen on that will respond to both the /metrics and
    /// the /health endpoints.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", default_value = "")]
    pub listen_metrics_urls: String,
    /// List of URLs to listen on for peer traffic.
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS", default_value = "http://localhost:2380")]
    pub listen_peer_urls: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS", default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (name=peerurl,...).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    /// Initial cluster token for the etcd cluster during bootstrap.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Maximum number of wal files to retain (0 is unlimited).
    #[arg(long, env = "ETCD_MAX_WALS", default_value_t = 5)]
    pub max_wals: usize,
    /// Maximum number of snapshot files to retain (0 is unlimited).
    #[arg(long, env = "ETCD_MAX_SNAPSHOTS", default_value_t = 5)]
    pub max_snapshots: usize,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Duration of periodic watch progress notifications (e.g. 10m, 30s, 500ms).
    #[arg(long, env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", default_value = "10m")]
    pub experimental_watch_progress_notify_interval: String,
    /// Enable the leader to send regular checkpoints to other members to prevent
    /// reset of remaining TTL on leader change.
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub experimental_enable_lease_checkpoint: bool,
    /// Interpret 'auto-compaction-retention' one of: periodic|revision.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// Auto compaction retention for mvcc key value store. 0 means disable auto
    /// compaction (periodic: a duration such as 1h, or whole hours; revision: a count).
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
    /// Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,
    /// Duration of time between two checkpoints of remaining lease TTLs.
    #[arg(long, env = "ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL", default_value = "5m")]
    pub experimental_lease_checkpoint_interval: String,
    /// How often the leader checks every member's key space for corruption (0s: never).
    /// A member whose hash differs gets a CORRUPT alarm, and writes are refused.
    /// Refuse membership changes that would leave fewer started voters than a quorum.
    #[arg(long, env = "ETCD_STRICT_RECONFIG_CHECK", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub strict_reconfig_check: bool,

    /// Before serving clients, compare this member's hash with its peers' at the same
    /// revision, and refuse to start if one differs.
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub experimental_initial_corrupt_check: bool,

    #[arg(long, env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME", default_value = "0s")]
    pub experimental_corrupt_check_time: String,

    /// Specify 'zap' for structured logging or 'capnslog'.
    #[arg(long, env = "ETCD_LOGGER", default_value = "capnslog")]
    pub logger: String,
    /// Configures log level. Only supports debug, info, warn, error, panic, or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// 'default', 'stderr', 'stdout', or a comma-separated list of those and file paths.
    #[arg(long, env = "ETCD_LOG_OUTPUTS", default_value = "default")]
    pub log_outputs: String,

    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE", default_value = "")]
    pub cert_file: String,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE", default_value = "")]
    pub key_file: String,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE", default_value = "")]
    pub trusted_ca_file: String,
    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub client_cert_auth: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE", default_value = "")]
    pub peer_cert_file: String,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE", default_value = "")]
    pub peer_key_file: String,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE", default_value = "")]
    pub peer_trusted_ca_file: String,
    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub peer_client_cert_auth: bool,
    /// Specify auth token type and its options ('simple'; detcd's tokens are signed, see
    /// the README) .
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,
    /// Time (in seconds) of the auth-token-ttl (accepted; detcd's tokens end with the
    /// user's password, not by time).
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// Specify bcrypt algorithm cost factor for auth password hashing.
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,
    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub auto_tls: bool,
    /// Peer TLS using generated certificates.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub peer_auto_tls: bool,
    /// Enable the raft Pre-Vote algorithm to prevent disruption when a node that has been
    /// partitioned away rejoins the cluster.
    #[arg(long, env = "ETCD_PRE_VOTE", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub pre_vote: bool,
    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS", default_value_t = u32::MAX)]
    pub max_concurrent_streams: u32,
    /// Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_INTERVAL", default_value = "2h")]
    pub grpc_keepalive_interval: String,
    /// Additional duration of wait before closing a non-responsive connection (0 to disable).
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s")]
    pub grpc_keepalive_timeout: String,
    /// Enable debug-level logging (same as --log-level=debug).
    #[arg(long, env = "ETCD_DEBUG", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub debug: bool,
    /// Set level of detail for exported metrics, specify 'extensive' to include server side
    /// grpc histogram metrics (detcd exports the same set for both).
    #[arg(long, env = "ETCD_METRICS", default_value = "basic")]
    pub metrics: String,
    /// Enable the v2 API (detcd serves only v3: true is refused).
    #[arg(long, env = "ETCD_ENABLE_V2", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub enable_v2: bool,
    /// Force to create a new one member cluster (not supported by detcd yet: refused).
    #[arg(long, env = "ETCD_FORCE_NEW_CLUSTER", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub force_new_cluster: bool,
    /// etcd flags taken so that etcd's command lines and environments start detcd
    /// unchanged, with no effect here (each one set is named in a warning at start).
    #[command(flatten)]
    pub no_effect: NoEffectFlags,
    /// TLS flags detcd does not implement yet: refused with a clear error when set.
    #[command(flatten)]
    pub unsupported_tls: UnsupportedTlsFlags,
    /// Allowed CN for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN", default_value = "")]
    pub peer_cert_allowed_cn: String,
}

/// etcd flags accepted with no effect (see `Flags::no_effect`), with why.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NoEffectFlags {
    /// Enable runtime profiling data via HTTP server (detcd has no pprof endpoint).
    #[arg(long, env = "ETCD_ENABLE_PPROF", num_args = 0..=1, default_missing_value = "true")]
    pub enable_pprof: Option<String>,
    /// Comma-separated white list of origins for CORS (detcd's HTTP endpoints send no CORS headers).
    #[arg(long, env = "ETCD_CORS")]
    pub cors: Option<String>,
    /// Comma-separated acceptable hostnames from HTTP client requests.
    #[arg(long, env = "ETCD_HOST_WHITELIST")]
    pub host_whitelist: Option<String>,
    /// Specify a particular log level for each etcd package (detcd: use --log-level).
    #[arg(long, env = "ETCD_LOG_PACKAGE_LEVELS")]
    pub log_package_levels: Option<String>,
    /// Whether to fast-forward initial election ticks on boot (detcd: raft's own start).
    #[arg(long, env = "ETCD_INITIAL_ELECTION_TICK_ADVANCE", num_args = 0..=1, default_missing_value = "true")]
    pub initial_election_tick_advance: Option<String>,
    /// Minimum interval duration that a client should wait before pinging server (not enforced by detcd).
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_MIN_TIME")]
    pub grpc_keepalive_min_time: Option<String>,
    /// Time duration after which a warning is generated if applying a request takes more time.
    #[arg(long, env = "ETCD_EXPERIMENTAL_WARNING_APPLY_DURATION")]
    pub experimental_warning_apply_duration: Option<String>,
    /// Maximum number of keys removed per compaction batch (detcd removes compacted records in its own bounded steps).
    #[arg(long, env = "ETCD_EXPERIMENTAL_COMPACTION_BATCH_LIMIT")]
    pub experimental_compaction_batch_limit: Option<String>,
    /// BackendBatchInterval is the maximum time before commit the backend transaction (detcd has no bbolt backend).
    #[arg(long, env = "ETCD_BACKEND_BATCH_INTERVAL")]
    pub backend_batch_interval: Option<String>,
    /// BackendBatchLimit is the maximum operations before commit the backend transaction (detcd has no bbolt backend).
    #[arg(long, env = "ETCD_BACKEND_BATCH_LIMIT")]
    pub backend_batch_limit: Option<String>,
    /// The freelist type bbolt uses (detcd has no bbolt backend).
    #[arg(long, env = "ETCD_EXPERIMENTAL_BACKEND_BBOLT_FREELIST_TYPE")]
    pub experimental_backend_bbolt_freelist_type: Option<String>,
}

impl NoEffectFlags {
    /// The flags set, as `--name`.
    fn set(&self) -> Vec<&'static str> {
        let all = [
            ("--enable-pprof", &self.enable_pprof),
            ("--cors", &self.cors),
            ("--host-whitelist", &self.host_whitelist),
            ("--log-package-levels", &self.log_package_levels),
            ("--initial-election-tick-advance", &self.initial_election_tick_advance),
            ("--grpc-keepalive-min-time", &self.grpc_keepalive_min_time),
            ("--experimental-warning-apply-duration", &self.experimental_warning_apply_duration),
            ("--experimental-compaction-batch-limit", &self.experimental_compaction_batch_limit),
            ("--backend-batch-interval", &self.backend_batch_interval),
            ("--backend-batch-limit", &self.backend_batch_limit),
            ("--experimental-backend-bbolt-freelist-type", &self.experimental_backend_bbolt_freelist_type),
        ];
        all.into_iter().filter(|(_, value)| value.is_some()).map(|(name, _)| name).collect()
    }
}

/// etcd's TLS flags detcd does not implement yet (see `Flags::unsupported_tls`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct UnsupportedTlsFlags {
    /// Path to the client certificate revocation list file.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<String>,
    /// Path to the peer certificate revocation list file.
    #[arg(long, env = "ETCD_PEER_CRL_FILE")]
    pub peer_crl_file: Option<String>,
    /// Comma-separated list of supported TLS cipher suites.
    #[arg(long, env = "ETCD_CIPHER_SUITES")]
    pub cipher_suites: Option<String>,
    /// Allowed TLS hostname for client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_ALLOWED_HOSTNAME")]
    pub client_cert_allowed_hostname: Option<String>,
    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME")]
    pub peer_cert_allowed_hostname: Option<String>,
}

/// etcd's auto-compaction flags: `periodic` with a duration (`1h`, `30m`) or whole hours
/// (`1`), `revision` with a count; retention `0` turns it off.
pub fn parse_auto_compaction(mode: &str, retention: &str) -> Result<crate::consensus::auto_compaction::AutoCompaction, String> {
    use crate::consensus::auto_compaction::{AutoCompaction, AUTO_COMPACTION_REVISION_INTERVAL_MS};
    if retention == "0" || retention.is_empty() {
        return Ok(AutoCompaction::Off);
    }
    match mode {
        "periodic" => {
            let retention_ms = match retention.parse::<u64>() {
                Ok(hours) => hours.saturating_mul(3_600_000),
                Err(_) => parse_duration_ms(retention).map_err(|e| format!("--auto-compaction-retention: {e}"))?,
            };
            Ok(AutoCompaction::Periodic { retention_ms })
        }
        "revision" => {
            let retain: i64 = retention
                .parse()
                .map_err(|_| format!("--auto-compaction-retention {retention:?}: revision mode takes a number of revisions"))?;
            Ok(AutoCompaction::Revision { retain, interval_ms: AUTO_COMPACTION_REVISION_INTERVAL_MS })
        }
        other => Err(format!("unknown auto-compaction-mode {other:?}: must be 'periodic' or 'revision'")),
    }
}

/// Parses a Go duration as etcd's flags take them (`10m`, `1h30m`, `2.5s`, `500ms`,
/// `0`) into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    if text == "0" {
        return Ok(0);
    }
    let mut rest = text;
    let mut total_ms = 0f64;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit_ms = match &rest[..unit_len] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return Err(invalid()),
        };
        total_ms += number * unit_ms;
        rest = &rest[unit_len..];
    }
    Ok(total_ms.round() as u64)
}

/// A checked configuration for one production member.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: String,
    pub data_dir: String,
    pub wal_dir: String,
    /// `host:port` to bind for clients.
    pub listen_client_addrs: Vec<ListenAddr>,
    pub advertise_client_urls: Vec<String>,
    /// `host:port` to bind for peers.
    pub listen_peer_addrs: Vec<ListenAddr>,
    /// `host:port` to bind for `/metrics` and `/health` only (`--listen-metrics-urls`).
    pub listen_metrics_addrs: Vec<ListenAddr>,
    /// Every first member: name → (member id, its first peer URL).
    pub members: BTreeMap<String, (u64, String)>,
    pub node: NodeConfig,
    pub initial_cluster_state: String,
    /// `--experimental-initial-corrupt-check`.
    pub initial_corrupt_check: bool,
    /// `--logger`, `--log-level`, `--log-outputs`.
    pub log: crate::logging::LogConfig,
    /// Client listeners with an `https://` URL (and `--listen-metrics-urls` ones).
    pub client_tls: TlsFiles,
    /// Peer listeners and connections with an `https://` URL.
    pub peer_tls: TlsFiles,
    /// `--bcrypt-cost`.
    pub bcrypt_cost: u32,
    /// `--max-concurrent-streams`, `--grpc-keepalive-interval`, `--grpc-keepalive-timeout`.
    pub grpc: crate::grpc::GrpcSettings,
    /// etcd flags set that have no effect in detcd (named in a warning at start).
    pub no_effect_flags: Vec<&'static str>,
}

/// A `--listen-*` URL: the address to bind and whether it speaks TLS (`https://`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddr {
    pub addr: String,
    pub tls: bool,
}

/// Parses `http://host:port` or `https://host:port` into `host:port`.
pub fn parse_url(url: &str) -> Result<String, String> {
    let rest = if let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) {
        rest
    } else if url.starts_with("unix://") || url.starts_with("unixs://") {
        return Err(format!("{url:?}: unix sockets are not supported by detcd; use http:// or https://"));
    } else {
        return Err(format!("URL scheme must be http, https, unix, or unixs: {url}"));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{url:?}: missing port in address"))?;
    if host.is_empty() {
        return Err(format!("{url:?}: missing host"));
    }
    port.parse::<u16>().map_err(|_| format!("{url:?}: invalid port {port:?}"))?;
    if rest.contains('/') {
        return Err(format!("{url:?}: URL must not have a path"));
    }
    Ok(rest.to_string())
}

fn parse_url_list(flag: &str, list: &str) -> Result<Vec<String>, String> {
    Ok(parse_listen_urls(flag, list)?.into_iter().map(|listen| listen.addr).collect())
}

fn parse_listen_urls(flag: &str, list: &str) -> Result<Vec<ListenAddr>, String> {
    let urls: Vec<&str> = list.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    if urls.is_empty() {
        return Err(format!("--{flag} must not be empty"));
    }
    urls.iter()
        .map(|u| {
            let addr = parse_url(u).map_err(|e| format!("invalid value for --{flag}: {e}"))?;
            Ok(ListenAddr { addr, tls: u.starts_with("https://") })
        })
        .collect()
}

impl Flags {
    /// Checks the flags the way etcd does and derives ids and the node configuration.
    pub fn resolve(&self) -> Result<ServerConfig, String> {
        if self.name.is_empty() {
            return Err("--name must not be empty".to_string());
        }
        if self.heartbeat_interval == 0 {
            return Err("--heartbeat-interval must be positive".to_string());
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout, self.heartbeat_interval
            ));
        }
        if self.election_timeout > 50_000 {
            return Err(format!("--election-timeout[{}ms] is too long, and should be set less than 50 seconds", self.election_timeout));
        }
        if self.snapshot_count == 0 {
            return Err("--snapshot-count must be positive".to_string());
        }
        if self.max_txn_ops == 0 || self.max_request_bytes == 0 {
            return Err("--max-txn-ops and --max-request-bytes must be positive".to_string());
        }
        if self.max_request_bytes > MAX_REQUEST_BYTES_LIMIT {
            return Err(format!(
                "--max-request-bytes {} is larger than a WAL record can hold; it must be at most {MAX_REQUEST_BYTES_LIMIT}",
                self.max_request_bytes
            ));
        }
        if self.initial_cluster_state != "new" && self.initial_cluster_state != "existing" {
            return Err(format!(
                "invalid value {:?} for --initial-cluster-state: must be 'new' or 'existing'",
                self.initial_cluster_state
            ));
        }
        let listen_client_urls = self.listen_client_urls.clone().unwrap_or_else(|| "http://localhost:2379".to_string());
        let advertise_client_urls = match (&self.listen_client_urls, &self.advertise_client_urls) {
            (Some(_), None) => {
                return Err("--advertise-client-urls is required when --listen-client-urls is set explicitly".to_string())
            }
            (_, Some(advertise)) => advertise.clone(),
            (None, None) => "http://localhost:2379".to_string(),
        };
        let listen_client_addrs = parse_listen_urls("listen-client-urls", &listen_client_urls)?;
        parse_url_list("advertise-client-urls", &advertise_client_urls)?;
        let listen_peer_addrs = parse_listen_urls("listen-peer-urls", &self.listen_peer_urls)?;
        if self.bcrypt_cost < crate::grpc::BCRYPT_COST_MIN || self.bcrypt_cost > crate::grpc::BCRYPT_COST_MAX {
            return Err(format!(
                "invalid --bcrypt-cost {}: must be between {} and {}",
                self.bcrypt_cost,
                crate::grpc::BCRYPT_COST_MIN,
                crate::grpc::BCRYPT_COST_MAX
            ));
        }
        let unsupported = &self.unsupported_tls;
        for (flag, value) in [
            ("--client-crl-file", &unsupported.client_crl_file),
            ("--peer-crl-file", &unsupported.peer_crl_file),
            ("--cipher-suites", &unsupported.cipher_suites),
            ("--client-cert-allowed-hostname", &unsupported.client_cert_allowed_hostname),
            ("--peer-cert-allowed-hostname", &unsupported.peer_cert_allowed_hostname),
        ] {
            if value.as_deref().is_some_and(|v| !v.is_empty()) {
                return Err(format!("{flag} is not supported by detcd yet"));
            }
        }
        if self.enable_v2 {
            return Err("--enable-v2: detcd serves the v3 API only".to_string());
        }
        if self.force_new_cluster {
            return Err("--force-new-cluster is not supported by detcd yet (restore a snapshot into a new one-member cluster instead: detcd snapshot restore)".to_string());
        }
        if self.metrics != "basic" && self.metrics != "extensive" {
            return Err(format!("unknown metrics option {:?}: must be 'basic' or 'extensive'", self.metrics));
        }
        let grpc_keepalive_interval_ms = parse_duration_ms(&self.grpc_keepalive_interval).map_err(|e| format!("--grpc-keepalive-interval: {e}"))?;
        let grpc_keepalive_timeout_ms = parse_duration_ms(&self.grpc_keepalive_timeout).map_err(|e| format!("--grpc-keepalive-timeout: {e}"))?;
        if self.max_concurrent_streams == 0 {
            return Err("--max-concurrent-streams must be positive".to_string());
        }
        let auth_token_kind = self.auth_token.split(',').next().unwrap_or("");
        if auth_token_kind != "simple" {
            return Err(format!("unknown or unsupported --auth-token {:?}: detcd supports 'simple' (its tokens are signed; JWT is not supported)", self.auth_token));
        }
        let client_tls = TlsFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            trusted_ca_file: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth,
            allowed_cn: String::new(),
            auto: self.auto_tls,
        };
        let peer_tls = TlsFiles {
            cert_file: self.peer_cert_file.clone(),
            key_file: self.peer_key_file.clone(),
            trusted_ca_file: self.peer_trusted_ca_file.clone(),
            client_cert_auth: self.peer_client_cert_auth,
            allowed_cn: self.peer_cert_allowed_cn.clone(),
            auto: self.peer_auto_tls,
        };
        for (client_url, listen) in listen_client_urls.split(',').map(str::trim).filter(|u| !u.is_empty()).zip(&listen_client_addrs) {
            if listen.tls && !client_tls.auto && (client_tls.cert_file.is_empty() || client_tls.key_file.is_empty()) {
                return Err(format!("TLS key/cert (--cert-file, --key-file) must be provided for client url {client_url} with HTTPS scheme"));
            }
        }
        for listen in &listen_peer_addrs {
            if listen.tls && !peer_tls.auto && (peer_tls.cert_file.is_empty() || peer_tls.key_file.is_empty()) {
                return Err(format!("cannot listen on TLS for {}: KeyFile and CertFile are not presented", listen.addr));
            }
        }
        let peer_urls_https = self.initial_advertise_peer_urls.split(',').chain(self.initial_cluster.as_deref().unwrap_or("").split(','));
        for url in peer_urls_https.map(|u| u.rsplit('=').next().unwrap_or("").trim()) {
            if url.starts_with("https://") && !peer_tls.is_set() {
                return Err(format!("peer URL {url} is https, but no peer TLS is configured (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file)"));
            }
        }
        let advertise_peer_addrs = parse_url_list("initial-advertise-peer-urls", &self.initial_advertise_peer_urls)?;

        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.name, self.initial_advertise_peer_urls.split(',').next().unwrap_or("")));
        let mut members = BTreeMap::new();
        for item in initial_cluster.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, url) = item
                .split_once('=')
                .ok_or_else(|| format!("invalid value {item:?} in --initial-cluster: expected name=peer-url"))?;
            parse_url(url).map_err(|e| format!("invalid value for --initial-cluster: {e}"))?;
            if members.contains_key(name) {
                // A second URL for the same member: etcd allows it; the first one is used to dial.
                continue;
            }
            members.insert(name.to_string(), (ids::member_id(&self.initial_cluster_token, name), url.trim().to_string()));
        }
        let Some((member_id, own_url)) = members.get(&self.name).cloned() else {
            return Err(format!("couldn't find local name {:?} in the initial cluster configuration", self.name));
        };
        let own_addr = parse_url(&own_url)?;
        if !advertise_peer_addrs.contains(&own_addr) {
            return Err(format!(
                "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={}",
                self.name, own_addr, self.initial_advertise_peer_urls
            ));
        }
        let member_ids: Vec<u64> = members.values().map(|(id, _)| *id).collect();
        let cluster_id = ids::cluster_id(&self.initial_cluster_token, &member_ids);

        let data_dir = self.data_dir.clone().unwrap_or_else(|| format!("{}.etcd", self.name));
        let wal_dir = if self.wal_dir.is_empty() { format!("{data_dir}/member/wal") } else { self.wal_dir.clone() };
        let mut node = NodeConfig::with_defaults(member_id, cluster_id, member_ids);
        node.name = self.name.clone();
        node.peer_urls = self.initial_advertise_peer_urls.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
        node.client_urls = advertise_client_urls.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
        for item in initial_cluster.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Some((name, url)) = item.split_once('=') {
                node.initial_peer_urls.entry(ids::member_id(&self.initial_cluster_token, name)).or_default().push(url.to_string());
            }
        }
        node.heartbeat_interval_ms = self.heartbeat_interval;
        node.election_timeout_ms = self.election_timeout;
        node.snapshot_count = self.snapshot_count;
        node.max_wals = if self.max_wals == 0 { usize::MAX } else { self.max_wals };
        node.max_snapshots = if self.max_snapshots == 0 { usize::MAX } else { self.max_snapshots };
        node.max_request_bytes = self.max_request_bytes;
        node.max_txn_ops = self.max_txn_ops;
        node.watch_progress_notify_interval_ms = parse_duration_ms(&self.experimental_watch_progress_notify_interval)
            .map_err(|e| format!("--experimental-watch-progress-notify-interval: {e}"))?;
        if node.watch_progress_notify_interval_ms == 0 {
            return Err("--experimental-watch-progress-notify-interval must be positive".to_string());
        }
        node.auto_compaction = parse_auto_compaction(&self.auto_compaction_mode, &self.auto_compaction_retention)?;
        node.quota_backend_bytes = if self.quota_backend_bytes == 0 {
            crate::consensus::config::QUOTA_BACKEND_BYTES_DEFAULT
        } else {
            self.quota_backend_bytes
        };
        node.corrupt_check_interval_ms = parse_duration_ms(&self.experimental_corrupt_check_time)
            .map_err(|e| format!("--experimental-corrupt-check-time: {e}"))?;
        node.lease_checkpoint_enabled = self.experimental_enable_lease_checkpoint;
        node.strict_reconfig_check = self.strict_reconfig_check;
        node.pre_vote = self.pre_vote;
        node.lease_checkpoint_interval_ms = parse_duration_ms(&self.experimental_lease_checkpoint_interval)
            .map_err(|e| format!("--experimental-lease-checkpoint-interval: {e}"))?;
        if node.lease_checkpoint_interval_ms == 0 {
            return Err("--experimental-lease-checkpoint-interval must be positive".to_string());
        }
        // etcd: 5s plus the time an election may take.
        node.request_timeout_ms = 5000 + 2 * self.election_timeout;

        Ok(ServerConfig {
            name: self.name.clone(),
            data_dir,
            wal_dir,
            listen_client_addrs,
            advertise_client_urls: advertise_client_urls.split(',').map(|s| s.trim().to_string()).collect(),
            listen_peer_addrs,
            listen_metrics_addrs: if self.listen_metrics_urls.trim().is_empty() {
                Vec::new()
            } else {
                parse_listen_urls("listen-metrics-urls", &self.listen_metrics_urls)?
            },
            members,
            node,
            initial_cluster_state: self.initial_cluster_state.clone(),
            initial_corrupt_check: self.experimental_initial_corrupt_check,
            log: crate::logging::parse_log_flags(&self.logger, if self.debug { "debug" } else { &self.log_level }, &self.log_outputs)?,
            client_tls,
            peer_tls,
            bcrypt_cost: self.bcrypt_cost,
            grpc: crate::grpc::GrpcSettings {
                max_concurrent_streams: self.max_concurrent_streams,
                keepalive_interval_ms: grpc_keepalive_interval_ms,
                keepalive_timeout_ms: grpc_keepalive_timeout_ms,
            },
            no_effect_flags: self.no_effect.set(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut all = vec!["detcd"];
        all.extend_from_slice(args);
        Flags::try_parse_from(all).expect("flags parse")
    }

    #[test]
    fn auto_compaction_flags_as_etcd() {
        use crate::consensus::auto_compaction::AutoCompaction;
        assert_eq!(parse_auto_compaction("periodic", "0"), Ok(AutoCompaction::Off));
        assert_eq!(parse_auto_compaction("periodic", "1"), Ok(AutoCompaction::Periodic { retention_ms: 3_600_000 }));
        assert_eq!(parse_auto_compaction("periodic", "30m"), Ok(AutoCompaction::Periodic { retention_ms: 1_800_000 }));
        assert!(matches!(parse_auto_compaction("revision", "1000"), Ok(AutoCompaction::Revision { retain: 1000, .. })));
        assert!(parse_auto_compaction("revision", "1h").is_err());
        assert!(parse_auto_compaction("sometimes", "1").is_err());
        let config = flags(&["--auto-compaction-mode", "revision", "--auto-compaction-retention", "10"]).resolve().expect("valid");
        assert!(matches!(config.node.auto_compaction, AutoCompaction::Revision { retain: 10, .. }));
    }

    #[test]
    fn durations_parse_as_go_does() {
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("2.5s"), Ok(2_500));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("fast").is_err());
        let config = flags(&["--experimental-watch-progress-notify-interval", "5s"]).resolve().expect("valid");
        assert_eq!(config.node.watch_progress_notify_interval_ms, 5_000);
        assert_eq!(flags(&[]).resolve().expect("defaults").node.watch_progress_notify_interval_ms, 600_000);
    }

    #[test]
    fn max_request_bytes_must_fit_a_wal_record() {
        let too_big = (WAL_RECORD_BYTES_MAX).to_string();
        let error = flags(&["--max-request-bytes", &too_big]).resolve().expect_err("refused");
        assert!(error.contains("larger than a WAL record can hold"), "{error}");
        let fits = MAX_REQUEST_BYTES_LIMIT.to_string();
        assert!(flags(&["--max-request-bytes", &fits]).resolve().is_ok());
    }

    #[test]
    fn defaults_match_etcd() {
        let config = flags(&[]).resolve().expect("defaults are valid");
        assert_eq!(config.name, "default");
        assert_eq!(config.data_dir, "default.etcd");
        assert_eq!(config.wal_dir, "default.etcd/member/wal");
        assert_eq!(config.listen_client_addrs, vec![ListenAddr { addr: "localhost:2379".into(), tls: false }]);
        assert_eq!(config.node.heartbeat_interval_ms, 100);
        assert_eq!(config.node.election_timeout_ms, 1000);
        assert_eq!(config.node.snapshot_count, 100_000);
        assert_eq!(config.node.max_request_bytes, 1_572_864);
        assert_eq!(config.node.max_txn_ops, 128);
    }

    #[test]
    fn refuses_nonsense() {
        let missing = flags(&["--name", "x", "--initial-cluster", "a=http://127.0.0.1:2380"]).resolve();
        assert_eq!(missing.unwrap_err(), "couldn't find local name \"x\" in the initial cluster configuration");
        let bad_url = flags(&["--listen-peer-urls", "localhost:2380"]).resolve();
        assert!(bad_url.unwrap_err().contains("URL scheme must be http"));
        let no_port = flags(&["--listen-peer-urls", "http://localhost"]).resolve();
        assert!(no_port.unwrap_err().contains("missing port"));
        let no_advertise = flags(&["--listen-client-urls", "http://127.0.0.1:2379"]).resolve();
        assert!(no_advertise.unwrap_err().contains("--advertise-client-urls is required"));
        let short_election = flags(&["--election-timeout", "200"]).resolve();
        assert!(short_election.unwrap_err().contains("at least as 5 times"));
        let bad_state = flags(&["--initial-cluster-state", "maybe"]).resolve();
        assert!(bad_state.unwrap_err().contains("--initial-cluster-state"));
    }

    #[test]
    fn environment_variables_are_read() {
        // clap reads ETCD_* when the flag is absent; set one for this process only.
        std::env::set_var("ETCD_MAX_WALS", "7");
        let config = flags(&[]).resolve().expect("valid");
        std::env::remove_var("ETCD_MAX_WALS");
        assert_eq!(config.node.max_wals, 7);
    }

    #[test]
    fn three_members_agree_on_ids() {
        let cluster = "a=http://127.0.0.1:1,b=http://127.0.0.1:2,c=http://127.0.0.1:3";
        let a = flags(&["--name", "a", "--initial-cluster", cluster, "--initial-advertise-peer-urls", "http://127.0.0.1:1"]).resolve().expect("a");
        let b = flags(&["--name", "b", "--initial-cluster", cluster, "--initial-advertise-peer-urls", "http://127.0.0.1:2"]).resolve().expect("b");
        assert_eq!(a.node.cluster_id, b.node.cluster_id);
        assert_ne!(a.node.member_id, b.node.member_id);
        assert_eq!(a.members, b.members);
    }
}
