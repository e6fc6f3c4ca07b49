//! `detcd`: the production member. Wires the core to real files, TCP peers, tokio time
//! and the gRPC API, then runs until killed or until a fatal disk error stops it.

#[cfg(madsim)]
fn main() {
    eprintln!("detcd is a production binary; the simulator build runs detcd-sim instead");
    std::process::exit(2);
}

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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("detcd: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(production::run(config));
    if let Err(message) = result {
        eprintln!("detcd: {message}");
        std::process::exit(1);
    }
}

#[cfg(not(madsim))]
mod production {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use detcd_node::config::ServerConfig;
    use detcd_node::env::fs_disk::FsDisk;
    use detcd_node::env::tcp::{self, TcpTransport};
    use detcd_node::env::{Env, NoObserver, RuntimeClock};
    use detcd_node::storage::MemberMeta;
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
        let metrics = detcd_node::grpc::metrics::Metrics::new();
        let data_metrics = metrics.clone();
        let data_disk = FsDisk::open(format!("{}/member", config.data_dir))
            .map_err(|e| e.to_string())?
            .with_sync_observer(move |took| data_metrics.record_data_fsync(took));
        let wal_metrics = metrics.clone();
        let wal_disk = FsDisk::open(&config.wal_dir).map_err(|e| e.to_string())?.with_sync_observer(move |took| wal_metrics.record_wal_fsync(took));
        let initialised = MemberMeta::load(&data_disk).map_err(|e| e.to_string())?.is_some();
        if config.initial_cluster_state == "existing" && !initialised {
            return Err(
                "--initial-cluster-state=existing needs a data dir of a member already in the cluster; \
                 adding members (member add) is not supported by detcd yet"
                    .to_string(),
            );
        }
        let member_id = config.node.member_id;
        let peers: BTreeMap<u64, String> = config
            .members
            .values()
            .filter(|(id, _)| *id != member_id)
            .map(|(id, addr)| (*id, addr.clone()))
            .collect();
        let env = Env {
            wal_disk: Arc::new(wal_disk),
            data_disk: Arc::new(data_disk),
            transport: Arc::new(TcpTransport::start(
                tcp::PeerIdentity { cluster_id: config.node.cluster_id, member_id },
                peers,
            )),
            clock: Arc::new(RuntimeClock::new()),
            observer: Arc::new(NoObserver),
            worker: Arc::new(detcd_node::env::BlockingPool),
            seed: production_seed(member_id),
        };
        let max_request_bytes = config.node.max_request_bytes;
        let (node, handle, inbox) = Node::open(config.node.clone(), env).map_err(|e| e.to_string())?;
        let known_members: Vec<u64> = config.members.values().map(|(id, _)| *id).filter(|id| *id != member_id).collect();
        for addr in &config.listen_peer_addrs {
            tcp::listen(addr, config.node.cluster_id, known_members.clone(), inbox.clone()).await.map_err(|e| format!("listen on peer address {addr}: {e}"))?;
        }
        for addr in &config.listen_client_addrs {
            let mut resolved = tokio::net::lookup_host(addr.as_str())
                .await
                .map_err(|e| format!("resolve client address {addr}: {e}"))?;
            let socket = resolved.next().ok_or_else(|| format!("client address {addr} resolves to nothing"))?;
            let incoming = detcd_node::grpc::bind(socket).map_err(|e| format!("listen on client address {addr}: {e}"))?;
            let handle = handle.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                if let Err(e) = detcd_node::grpc::serve(incoming, handle, max_request_bytes, metrics).await {
                    eprintln!("detcd: client listener {socket} stopped: {e}");
                    std::process::exit(1);
                }
            });
        }
        for addr in &config.listen_metrics_addrs {
            let socket = tokio::net::lookup_host(addr.as_str())
                .await
                .map_err(|e| format!("resolve metrics address {addr}: {e}"))?
                .next()
                .ok_or_else(|| format!("metrics address {addr} resolves to nothing"))?;
            let incoming = detcd_node::grpc::bind(socket).map_err(|e| format!("listen on metrics address {addr}: {e}"))?;
            let (handle, metrics, addr) = (handle.clone(), metrics.clone(), addr.clone());
            tokio::spawn(async move {
                if let Err(e) = detcd_node::grpc::serve_metrics(incoming, handle, metrics).await {
                    eprintln!("detcd: metrics listener {addr} stopped: {e}");
                    std::process::exit(1);
                }
            });
        }
        eprintln!(
            "detcd: member {} ({:016x}) of cluster {:016x} serving clients on {}",
            config.name,
            member_id,
            config.node.cluster_id,
            config.advertise_client_urls.join(",")
        );
        // Keep `inbox` alive for the peer listeners; the node stops on a fatal error, or
        // when SIGTERM or SIGINT asks it to. Stopping between two loop turns is safe at
        // any moment: nothing is acknowledged before it is durable.
        let result = tokio::select! {
            result = node.run() => result,
            signal = shutdown_signal() => {
                eprintln!("detcd: received {signal} signal, shutting down...");
                Ok(())
            }
        };
        drop(inbox);
        match result {
            Ok(()) => Ok(()),
            Err(fatal) => Err(format!("member stopped: {fatal}")),
        }
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
