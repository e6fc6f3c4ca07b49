//! `detcd-load`: drives a running etcd-compatible cluster and reports throughput and
//! latency percentiles. Two modes:
//! - `put` (default): concurrent clients doing puts;
//! - `lease-grant`: concurrent clients granting leases (TTL 60 s);
//! - `keep-alive`: each client grants one lease, then renews it over one keep-alive
//!   stream, one renewal in flight at a time;
//! - `watch`: N watchers on one prefix (multiplexed `--watchers-per-stream` to a stream,
//!   `--streams-per-connection` streams to a connection) and one writer putting
//!   `--total` values under it; reports events delivered per second, delivery latency
//!   (put issued → event received, from a timestamp in the value), and, given the
//!   server's pids, its memory per idle watcher.
//!
//! - `get` / `get-serializable`: point reads of keys a `put` run wrote (linearizable,
//!   or served by the member that gets them);
//! - `txn`: compare the key's mod revision, then put (etcd's usual CAS shape);
//! - `delete`: deletes of single keys;
//! - `range`: one client reading `--range-keys` keys (keys only) per request, `--total`
//!   requests — the long-read figure of the scale benchmark.
//!
//! `--client raw` (the default) sends put, get, get-serializable, txn and delete through
//! the light client of `raw_grpc.rs` (one task per client, no tonic); `--client
//! etcd-client` sends them through the `etcd-client` crate, the client programs use
//! (the other modes always do). Both report the tool's own CPU per operation.
//!
//! With `--server-pids` it reports the servers' CPU per operation (user + system time
//! from /proc) and whether other processes used the CPU meanwhile (`noisy=1` when they
//! took more than a tenth of one core: the figures of that run are suspect).
//!
//! Requests are bounded in count and in time; it talks only to the endpoints given
//! (use loopback addresses).

use std::time::{Duration, Instant};

use clap::Parser;
use etcd_client::{Client, ConnectOptions};

mod raw_grpc;

#[derive(Parser, Debug)]
#[command(name = "detcd-load", about = "Concurrent put load against an etcd-compatible cluster")]
struct Args {
    /// Comma-separated client endpoints (host:port); clients are spread over them.
    #[arg(long, default_value = "127.0.0.1:2379")]
    endpoints: String,
    /// Concurrent clients, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Total puts across all clients.
    #[arg(long, default_value_t = 10_000)]
    total: usize,
    /// Stop after this many seconds even if `total` was not reached.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// Distinct keys written.
    #[arg(long, default_value_t = 1000)]
    key_space: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// `put` or `watch`.
    #[arg(long, default_value = "put")]
    mode: String,
    /// Watch mode: watchers on the prefix.
    #[arg(long, default_value_t = 1)]
    watchers: usize,
    /// Watch mode: watchers sharing one gRPC stream (as clientv3 shares one per context).
    #[arg(long, default_value_t = 100)]
    watchers_per_stream: usize,
    /// Watch mode: streams sharing one connection.
    #[arg(long, default_value_t = 10)]
    streams_per_connection: usize,
    /// Server process ids (comma-separated): their CPU time per operation is reported;
    /// in watch mode, their resident memory before and after the watchers are created.
    #[arg(long, default_value = "")]
    server_pids: String,
    /// Range mode: keys read per request.
    #[arg(long, default_value_t = 100_000)]
    range_keys: i64,
    /// `raw` (the light client, for put, get, get-serializable, txn and delete) or
    /// `etcd-client`.
    #[arg(long, default_value = "raw")]
    client: String,
}

/// Resident memory of a process in KiB (Linux), 0 if unknown.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of a process in clock ticks (1/100 s on Linux), 0 if unknown.
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0) + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// Busy clock ticks of the whole machine (every CPU), from /proc/stat.
fn machine_busy_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return 0 };
    let Some(line) = stat.lines().next() else { return 0 };
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
    values.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum()
}

/// CPU accounting around one run: the servers', this tool's and the machine's.
struct CpuSample {
    servers: u64,
    own: u64,
    machine: u64,
}

fn cpu_sample(pids: &[String]) -> CpuSample {
    CpuSample { servers: pids.iter().map(|p| cpu_ticks(p)).sum(), own: cpu_ticks("self"), machine: machine_busy_ticks() }
}

/// `server_cpu_us_per_op=… tool_cpu_us_per_op=… other_cpu_pct=… noisy=0|1` for a run of
/// `ops` operations.
fn cpu_report(before: &CpuSample, after: &CpuSample, ops: usize, elapsed: Duration, with_servers: bool) -> String {
    const TICK_US: f64 = 10_000.0;
    let servers = after.servers.saturating_sub(before.servers);
    let own = after.own.saturating_sub(before.own);
    let other = after.machine.saturating_sub(before.machine).saturating_sub(servers + own);
    let other_pct = other as f64 * TICK_US / elapsed.as_micros().max(1) as f64 * 100.0;
    let per_op = if with_servers { servers as f64 * TICK_US / ops.max(1) as f64 } else { 0.0 };
    let own_per_op = own as f64 * TICK_US / ops.max(1) as f64;
    format!(
        "server_cpu_us_per_op={per_op:.1} tool_cpu_us_per_op={own_per_op:.1} other_cpu_pct={other_pct:.1} noisy={}",
        u8::from(with_servers && other_pct > 10.0)
    )
}

fn total_rss_kib(pids: &[u32]) -> u64 {
    pids.iter().map(|pid| rss_kib(*pid)).sum()
}

async fn connect(endpoint: &str) -> Client {
    let options = ConnectOptions::new().with_timeout(Duration::from_secs(10)).with_connect_timeout(Duration::from_secs(3));
    Client::connect([endpoint], Some(options)).await.expect("connect")
}

/// The watch benchmark (see the module documentation).
async fn run_watch(args: &Args, endpoints: &[String]) {
    use etcd_client::WatchOptions;
    let pids: Vec<u32> = args.server_pids.split(',').filter_map(|p| p.trim().parse().ok()).collect();
    let prefix = format!("watchbench/{}/", std::process::id());
    let watchers = args.watchers.max(1);
    let per_stream = args.watchers_per_stream.max(1);
    let streams = watchers.div_ceil(per_stream);
    let per_connection = args.streams_per_connection.max(1);
    let rss_before = total_rss_kib(&pids);
    let origin = Instant::now();
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(usize, Vec<Duration>)>();
    let (ready_sender, mut ready) = tokio::sync::mpsc::unbounded_channel::<()>();
    let expected_per_watcher = args.total;
    let mut clients: Vec<Client> = Vec::new();
    for stream_index in 0..streams {
        if stream_index % per_connection == 0 {
            clients.push(connect(&endpoints[(stream_index / per_connection) % endpoints.len()]).await);
        }
        let mut client = clients.last().expect("a connection").clone();
        let watchers_here = per_stream.min(watchers - stream_index * per_stream);
        let prefix = prefix.clone();
        let sender = sender.clone();
        let ready_sender = ready_sender.clone();
        tokio::spawn(async move {
            let options = || Some(WatchOptions::new().with_prefix());
            let mut stream = client.watch(prefix.clone(), options()).await.expect("watch");
            for _ in 1..watchers_here {
                stream.watch(prefix.clone(), options()).await.expect("watch");
            }
            let mut created = 0;
            let mut latencies = Vec::new();
            let mut events = 0usize;
            let goal = watchers_here * expected_per_watcher;
            while events < goal {
                let Ok(Some(response)) = stream.message().await else { break };
                if response.created() {
                    created += 1;
                    if created == watchers_here {
                        let _ = ready_sender.send(());
                    }
                    continue;
                }
                let now = origin.elapsed();
                for event in response.events() {
                    if let Some(kv) = event.kv() {
                        let sent_us = u64::from_le_bytes(kv.value()[..8].try_into().expect("timestamp"));
                        latencies.push(now.saturating_sub(Duration::from_micros(sent_us)));
                        events += 1;
                    }
                }
            }
            let _ = sender.send((events, latencies));
        });
    }
    drop(sender);
    drop(ready_sender);
    for _ in 0..streams {
        ready.recv().await.expect("every stream created its watchers");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = total_rss_kib(&pids);
    // One writer, values stamped with the moment the put was issued.
    let mut writer = connect(&endpoints[0]).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.max_seconds);
    let mut value = vec![b'x'; args.value_bytes.max(8)];
    for n in 0..args.total {
        if Instant::now() >= deadline {
            break;
        }
        value[..8].copy_from_slice(&(origin.elapsed().as_micros() as u64).to_le_bytes());
        writer.put(format!("{prefix}{:06}", n % args.key_space.max(1)), value.clone(), None).await.expect("put");
    }
    let mut latencies = Vec::new();
    let mut delivered = 0usize;
    while let Ok(Some((events, mut l))) = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5), receiver.recv()).await {
        delivered += events;
        latencies.append(&mut l);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let per_watcher_bytes = (rss_idle.saturating_sub(rss_before) * 1024) as f64 / watchers as f64;
    println!(
        "watchers={} streams={} puts={} events={} expected_events={} seconds={:.2} events_per_s={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} rss_before_kib={} rss_idle_kib={} bytes_per_watcher={:.0}",
        watchers,
        streams,
        args.total,
        delivered,
        watchers * args.total,
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 50.0).as_secs_f64() * 1000.0,
        percentile(&latencies, 99.0).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        rss_before,
        rss_idle,
        per_watcher_bytes,
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// What one light client does: its place among the clients, its share of the requests,
/// the key space and when to stop.
struct RawPlan {
    client_index: usize,
    per_client: usize,
    key_space: usize,
    deadline: Instant,
}

/// One client of `--client raw`: its connection and its requests polled by this one
/// task, the same keys as the `etcd-client` path. Returns the latencies of the
/// successful requests and the number that failed.
async fn run_raw_client(endpoint: String, plan: RawPlan, mode: String, value: Vec<u8>) -> (Vec<Duration>, usize) {
    let RawPlan { client_index, per_client, key_space, deadline } = plan;
    let (mut client, connection) = match raw_grpc::connect(&endpoint).await {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("client {client_index}: {e}");
            return (Vec::new(), per_client);
        }
    };
    let requests = async {
        let mut latencies = Vec::with_capacity(per_client);
        let mut errors = 0usize;
        for n in 0..per_client {
            if Instant::now() >= deadline {
                break;
            }
            let begun = Instant::now();
            // The keys of the etcd-client path: puts walk the key space, the others stride it.
            let key = match mode.as_str() {
                "put" => format!("load/{:08}", (client_index * per_client + n) % key_space),
                _ => format!("load/{:08}", (client_index * per_client + n * 7919) % key_space),
            };
            let (path, message) = match mode.as_str() {
                "put" => (raw_grpc::PATH_PUT, raw_grpc::put_request(key.as_bytes(), &value)),
                "get" => (raw_grpc::PATH_RANGE, raw_grpc::range_request(key.as_bytes(), false)),
                "get-serializable" => (raw_grpc::PATH_RANGE, raw_grpc::range_request(key.as_bytes(), true)),
                "txn" => (raw_grpc::PATH_TXN, raw_grpc::txn_mod_revision_less_put(key.as_bytes(), i64::MAX, &value)),
                _ => (raw_grpc::PATH_DELETE_RANGE, raw_grpc::delete_range_request(key.as_bytes())),
            };
            match tokio::time::timeout(Duration::from_secs(5), client.unary(path, &message)).await {
                Ok(Ok(())) => latencies.push(begun.elapsed()),
                Ok(Err(e)) => {
                    if errors == 0 {
                        eprintln!("client {client_index}: {e}");
                    }
                    errors += 1;
                }
                Err(_) => errors += 1,
            }
        }
        (latencies, errors)
    };
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        biased;
        outcome = requests => outcome,
        ended = &mut connection => {
            eprintln!("client {client_index}: the connection to {endpoint} ended: {ended:?}");
            (Vec::new(), per_client)
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let endpoints: Vec<String> = args.endpoints.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    assert!(!endpoints.is_empty(), "--endpoints must name at least one endpoint");
    match args.mode.as_str() {
        "put" | "get" | "get-serializable" | "txn" | "delete" | "range" | "lease-grant" | "keep-alive" => {}
        "watch" => return run_watch(&args, &endpoints).await,
        other => panic!(
            "--mode must be put, get, get-serializable, txn, delete, range, lease-grant, keep-alive or watch, not {other:?}"
        ),
    }
    let raw = match args.client.as_str() {
        "raw" => matches!(args.mode.as_str(), "put" | "get" | "get-serializable" | "txn" | "delete"),
        "etcd-client" => false,
        other => panic!("--client must be raw or etcd-client, not {other:?}"),
    };
    let server_pids: Vec<String> = args.server_pids.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
    let range_keys = args.range_keys;
    let mode = args.mode.clone();
    let clients = args.clients.max(1);
    let per_client = args.total.div_ceil(clients);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let value = vec![b'x'; args.value_bytes];
    let cpu_before = cpu_sample(&server_pids);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client_index in 0..clients {
        let endpoint = endpoints[client_index % endpoints.len()].clone();
        let value = value.clone();
        let key_space = args.key_space.max(1);
        let mode = mode.clone();
        if raw {
            let plan = RawPlan { client_index, per_client, key_space, deadline };
            tasks.push(tokio::spawn(async move { run_raw_client(endpoint, plan, mode, value).await }));
            continue;
        }
        tasks.push(tokio::spawn(async move {
            let options = ConnectOptions::new().with_timeout(Duration::from_secs(5)).with_connect_timeout(Duration::from_secs(3));
            let mut client = match Client::connect([endpoint.as_str()], Some(options)).await {
                Ok(client) => client,
                Err(e) => {
                    eprintln!("client {client_index}: cannot connect to {endpoint}: {e}");
                    return (Vec::new(), per_client);
                }
            };
            let mut latencies = Vec::with_capacity(per_client);
            let mut errors = 0usize;
            let mut keep_alive = None;
            if mode == "keep-alive" {
                let Ok(lease) = client.lease_grant(60, None).await else { return (Vec::new(), per_client) };
                keep_alive = client.lease_keep_alive(lease.id()).await.ok();
            }
            for n in 0..per_client {
                if Instant::now() >= deadline {
                    break;
                }
                let begun = Instant::now();
                let ok = match mode.as_str() {
                    "lease-grant" => client.lease_grant(60, None).await.is_ok(),
                    "keep-alive" => match keep_alive.as_mut() {
                        Some((keeper, stream)) => {
                            keeper.keep_alive().await.is_ok()
                                && matches!(tokio::time::timeout(Duration::from_secs(10), stream.message()).await, Ok(Ok(Some(_))))
                        }
                        None => false,
                    },
                    "get" | "get-serializable" | "txn" | "delete" => {
                        use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
                        // A key another client is not hitting at the same moment.
                        let key = format!("load/{:08}", (client_index * per_client + n * 7919) % key_space);
                        match mode.as_str() {
                            "get" => client.get(key, None).await.is_ok(),
                            "get-serializable" => client.get(key, Some(GetOptions::new().with_serializable())).await.is_ok(),
                            "txn" => {
                                let txn = Txn::new()
                                    .when([Compare::mod_revision(key.clone(), CompareOp::Less, i64::MAX)])
                                    .and_then([TxnOp::put(key, value.clone(), None)]);
                                client.txn(txn).await.is_ok()
                            }
                            _ => client.delete(key, None).await.is_ok(),
                        }
                    }
                    "range" => {
                        use etcd_client::GetOptions;
                        let options = GetOptions::new().with_prefix().with_keys_only().with_limit(range_keys);
                        client.get("load/", Some(options)).await.is_ok_and(|r| r.kvs().len() as i64 == range_keys.min(r.count()))
                    }
                    _ => {
                        let key = format!("load/{:08}", (client_index * per_client + n) % key_space);
                        client.put(key, value.clone(), None).await.is_ok()
                    }
                };
                if ok {
                    latencies.push(begun.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((mut l, e)) = task.await {
            latencies.append(&mut l);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_report(&cpu_before, &cpu_sample(&server_pids), latencies.len(), elapsed, !server_pids.is_empty());
    latencies.sort_unstable();
    println!(
        "mode={} clients={} puts={} errors={} seconds={:.2} puts_per_s={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} {cpu}",
        args.mode,
        clients,
        latencies.len(),
        errors,
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 50.0).as_secs_f64() * 1000.0,
        percentile(&latencies, 99.0).as_secs_f64() * 1000.0,
        percentile(&latencies, 99.9).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
    );
}
