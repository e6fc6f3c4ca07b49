//! `detcd`: the production member. Wires the core to real files, TCP peers, tokio time
//! and the gRPC API, then runs until killed or until a fatal disk error stops it.

#[cfg(madsim)]
fn main() {
    eprintln!("detcd is a production binary; the simulator build runs detcd-sim instead");
    std::process::exit(2);
}

/// mimalloc instead of glibc's malloc. Measured (one member, alternating A/B, 3 rounds):
/// server CPU per put at 64 clients 30-36 us vs 37-47, per linearizable get 24-26 vs
/// 28-34 (malloc, free and their consolidation were ~11% of the profile); peak memory
/// loading 1M keys 528 vs 545 MiB, restart 0.34 vs 0.61 s. The simulator keeps the
/// system allocator: no measurable gain there, 60% more memory per seed.
#[cfg(not(madsim))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(madsim))]
fn main() {
    use clap::Parser;
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("snapshot") {
        std::process::exit(detcd_node::snapshot_cli::main(&args[2..]));
    }
    let flags = detcd_node::config::Flags::parse();
    let config = match flags.resolve() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("detcd: {message}");
            std::process::exit(2);
        }
    };
    if let Err(message) = detcd_node::logging::install(&config.log) {
        eprintln!("detcd: {message}");
        std::process::exit(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("detcd: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(production::run(config));
    if let Err(message) = result {
        tracing::error!("{message}");
        std::process::exit(1);
    }
}

#[cfg(not(madsim))]
mod production {
    use std::sync::Arc;

    use detcd_node::config::ServerConfig;
    use detcd_node::env::fs_disk::FsDisk;
    use detcd_node::env::tcp::{self, TcpTransport};
    use detcd_node::env::{Env, RuntimeClock};
    use detcd_node::storage::MemberMeta;
    use detcd_node::tls::PeerTls;
    use detcd_node::Node;

    /// The production seed for the member's generator. Production needs no
    /// reproducibility, only distinct election timeouts per member and per start.
    fn production_seed(member_id: u64) -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        member_id ^ nanos ^ u64::from(std::process::id()).rotate_left(32)
    }

    pub async fn run(config: ServerConfig) -> Result<(), String> {
        tracing::info!(
            name = config.name.as_str(),
            data_dir = config.data_dir.as_str(),
            wal_dir = config.wal_dir.as_str(),
            version = detcd_node::grpc::SERVER_VERSION,
            "starting an etcd server"
        );
        for flag in &config.no_effect_flags {
            tracing::warn!(flag, "{flag} is accepted for etcd compatibility and has no effect in detcd");
        }
        let metrics = detcd_node::grpc::metrics::Metrics::new();
        let data_metrics = metrics.clone();
        let data_disk = FsDisk::open(format!("{}/member", config.data_dir)).map_err(|e| e.to_string())?.with_sync_observer(move |took| {
            data_metrics.record_data_fsync(took);
            detcd_node::logging::note_fsync(took, "data");
        });
        // Held until the process ends: a second process on the same directories is refused.
        let _data_dir_lock = lock_dir(&format!("{}/member", config.data_dir))?;
        let wal_metrics = metrics.clone();
        let wal_disk = FsDisk::open(&config.wal_dir).map_err(|e| e.to_string())?.with_sync_observer(move |took| {
            wal_metrics.record_wal_fsync(took);
            detcd_node::logging::note_fsync(took, "wal");
        });
        let _wal_dir_lock = lock_dir(&config.wal_dir)?;
        let mut config = config;
        detcd_node::tls::install_provider();
        // --auto-tls / --peer-auto-tls: self-signed certificates for the listeners' hosts.
        let hosts = |addrs: &[detcd_node::config::ListenAddr]| -> Vec<String> {
            let mut hosts: Vec<String> = addrs.iter().map(|l| l.addr.rsplit_once(':').map_or(l.addr.clone(), |(h, _)| h.trim_matches(['[', ']']).to_string())).collect();
            hosts.push("localhost".to_string());
            hosts.dedup();
            hosts
        };
        config.client_tls = config.client_tls.clone().with_auto_certificate(&format!("{}/fixtures/client", config.data_dir), &hosts(&config.listen_client_addrs))?;
        config.peer_tls = config.peer_tls.clone().with_auto_certificate(&format!("{}/fixtures/peer", config.data_dir), &hosts(&config.listen_peer_addrs))?;
        let peer_tls = if config.peer_tls.is_set() { Some(Arc::new(PeerTls::from_files(&config.peer_tls)?)) } else { None };
        let client_tls = || detcd_node::tls::client_port_tls(&config.client_tls);
        if config.client_tls.is_set() {
            client_tls()?;
        }
        match (MemberMeta::load(&data_disk).map_err(|e| e.to_string())?, config.initial_cluster_state.as_str()) {
            // A member that joined a running cluster keeps the identity it was given
            // (etcd ignores --initial-cluster once the data dir exists).
            (Some(meta), "existing") => {
                config.node.member_id = meta.member_id;
                config.node.cluster_id = meta.cluster_id;
            }
            (Some(_), _) => {}
            (None, "existing") => {
                let (cluster_id, member_id, members) = join_existing(&config, peer_tls.as_deref()).await?;
                config.node.member_id = member_id;
                config.node.cluster_id = cluster_id;
                config.node.initial_voters = Vec::new();
                // Whom to answer until the leader's snapshot brings the member table.
                config.node.initial_peer_urls = members.into_iter().map(|m| (m.id, m.peer_ur_ls)).collect();
            }
            (None, _) => {}
        }
        let member_id = config.node.member_id;
        let round_trip_metrics = metrics.clone();
        let transport = Arc::new(
            TcpTransport::start(tcp::PeerIdentity { cluster_id: config.node.cluster_id, member_id }, peer_tls.clone())
                .with_round_trip_observer(Arc::new(move |peer, took| round_trip_metrics.record_peer_round_trip(peer, took))),
        );
        let directory = transport.directory();
        let env = Env {
            wal_disk: Arc::new(wal_disk),
            data_disk: Arc::new(data_disk),
            transport,
            clock: Arc::new(RuntimeClock::new()),
            observer: Arc::new(detcd_node::logging::LogObserver::new()),
            worker: Arc::new(detcd_node::env::BlockingPool),
            seed: production_seed(member_id),
        };
        let max_request_bytes = config.node.max_request_bytes;
        let bcrypt_cost = config.bcrypt_cost;
        let grpc_settings = config.grpc;
        let (node, handle, inbox) = Node::open(config.node.clone(), env).map_err(|e| e.to_string())?;
        // The loop is a task on the runtime's workers, not this thread's `block_on`: a
        // request then goes from its connection's task to the loop and back on one worker
        // (tokio runs a task woken by the running one next, on the same thread). Driven
        // from the main thread, every request crossed threads twice (futex and eventfd
        // wake-ups). One member, one client: put 3.5-3.7k -> 4.3-4.6k/s, get 6.6-7.0k -> ~9k/s.
        let mut node_run = tokio::spawn(node.run());
        let stopped_as = |joined: Result<Result<(), _>, tokio::task::JoinError>| match joined {
            Ok(result) => result.map_err(|fatal| format!("member stopped: {fatal}")),
            Err(panicked) => Err(format!("member loop ended: {panicked}")),
        };
        for listen in &config.listen_peer_addrs {
            let addr = &listen.addr;
            let tls = if listen.tls { peer_tls.clone() } else { None };
            tcp::listen(addr, tls, config.node.cluster_id, directory.clone(), inbox.clone()).await.map_err(|e| format!("listen on peer address {addr}: {e}"))?;
        }
        if config.initial_corrupt_check {
            // Peers must reach this member meanwhile: its loop runs during the check.
            let checked = tokio::select! {
                stopped = &mut node_run => return stopped_as(stopped),
                checked = detcd_node::grpc::initial_check::check_with_peers(&handle) => checked,
            };
            match checked {
                Ok(summary) => tracing::info!("{summary}"),
                Err(inconsistency) => return Err(format!("initial corruption check: {inconsistency}")),
            }
        }
        for listen in &config.listen_client_addrs {
            let addr = &listen.addr;
            let tls = if listen.tls { Some(client_tls()?) } else { None };
            let mut resolved = tokio::net::lookup_host(addr.as_str())
                .await
                .map_err(|e| format!("resolve client address {addr}: {e}"))?;
            let socket = resolved.next().ok_or_else(|| format!("client address {addr} resolves to nothing"))?;
            let incoming = detcd_node::grpc::bind(socket).map_err(|e| format!("listen on client address {addr}: {e}"))?;
            let handle = handle.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                if let Err(e) = detcd_node::grpc::serve(incoming, tls, handle, max_request_bytes, bcrypt_cost, grpc_settings, metrics).await {
                    tracing::error!("client listener {socket} stopped: {e}");
                    std::process::exit(1);
                }
            });
        }
        for listen in &config.listen_metrics_addrs {
            let addr = &listen.addr;
            let tls = if listen.tls { Some(client_tls()?) } else { None };
            let socket = tokio::net::lookup_host(addr.as_str())
                .await
                .map_err(|e| format!("resolve metrics address {addr}: {e}"))?
                .next()
                .ok_or_else(|| format!("metrics address {addr} resolves to nothing"))?;
            let incoming = detcd_node::grpc::bind(socket).map_err(|e| format!("listen on metrics address {addr}: {e}"))?;
            let (handle, metrics, addr) = (handle.clone(), metrics.clone(), addr.clone());
            tokio::spawn(async move {
                if let Err(e) = detcd_node::grpc::serve_metrics(incoming, tls, handle, metrics).await {
                    tracing::error!("metrics listener {addr} stopped: {e}");
                    std::process::exit(1);
                }
            });
        }
        tracing::info!(
            name = config.name.as_str(),
            local_member_id = format!("{member_id:016x}").as_str(),
            cluster_id = format!("{:016x}", config.node.cluster_id).as_str(),
            advertise_client_urls = config.advertise_client_urls.join(",").as_str(),
            "ready to serve client requests"
        );
        // Keep `inbox` alive for the peer listeners; the node stops on a fatal error, or
        // when SIGTERM or SIGINT asks it to. Stopping between two loop turns is safe at
        // any moment: nothing is acknowledged before it is durable.
        let result = tokio::select! {
            result = &mut node_run => stopped_as(result),
            signal = shutdown_signal() => {
                tracing::info!(signal, "received {signal} signal, shutting down...");
                Ok(())
            }
        };
        // Stopped between two loop turns (safe at any moment, as above).
        node_run.abort();
        drop(inbox);
        result
    }

    /// Takes an exclusive lock on `dir/detcd.lock` (kept while the returned file is open):
    /// two processes writing one WAL would destroy it.
    fn lock_dir(dir: &str) -> Result<std::fs::File, String> {
        let path = format!("{dir}/detcd.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open lock file {path}: {e}"))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!("{dir} is in use by another process (lock file {path} is held)")),
            Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {path}: {e}")),
        }
    }

    /// Attempts to reach a member of the running cluster when joining it.
    const JOIN_ATTEMPTS_MAX: u32 = 50;
    const JOIN_RETRY_DELAY_MS: u64 = 200;

    /// `--initial-cluster-state existing` on an empty data dir: asks the other members of
    /// `--initial-cluster` (on their peer URLs) for the member list, and finds this member
    /// in it by its advertised peer URLs — it must have been added (`etcdctl member
    /// add`) first. Returns (cluster id, member id, members).
    async fn join_existing(config: &ServerConfig, peer_tls: Option<&PeerTls>) -> Result<(u64, u64, Vec<detcd_node::pb::etcdserverpb::Member>), String> {
        let own_urls: std::collections::BTreeSet<&String> = config.node.peer_urls.iter().collect();
        let peers: Vec<&String> = config.members.iter().filter(|(name, _)| **name != config.name).map(|(_, (_, addr))| addr).collect();
        if peers.is_empty() {
            return Err("--initial-cluster-state=existing needs --initial-cluster to name the cluster's current members".to_string());
        }
        let mut last_error = String::new();
        for _ in 0..JOIN_ATTEMPTS_MAX {
            for addr in &peers {
                match tcp::query_members(addr, peer_tls).await {
                    Ok((cluster_id, members)) => {
                        let found = members.iter().find(|m| m.peer_ur_ls.iter().collect::<std::collections::BTreeSet<_>>() == own_urls);
                        return match found {
                            Some(member) => Ok((cluster_id, member.id, members.clone())),
                            None => Err(format!(
                                "the cluster {cluster_id:016x} has no member with peer URLs {:?}; add it first (etcdctl member add {} --peer-urls={})",
                                config.node.peer_urls,
                                config.name,
                                config.node.peer_urls.join(",")
                            )),
                        };
                    }
                    Err(e) => last_error = e,
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(JOIN_RETRY_DELAY_MS)).await;
        }
        Err(format!("could not reach any member of --initial-cluster to join the cluster: {last_error}"))
    }

    /// Waits for SIGTERM or SIGINT; the signal's name as etcd prints it. If the handlers
    /// cannot be installed, never returns (the default dispositions stay).
    async fn shutdown_signal() -> &'static str {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = terminate.recv() => "terminated",
            _ = interrupt.recv() => "interrupt",
        }
    }
}
