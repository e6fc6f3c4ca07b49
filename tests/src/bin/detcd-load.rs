//! `detcd-load`: drives a running etcd-compatible cluster with concurrent puts and reports
//! throughput and latency percentiles. Requests are bounded in count and in time; it
//! talks only to the endpoints given (use loopback addresses).

use std::time::{Duration, Instant};

use clap::Parser;
use etcd_client::{Client, ConnectOptions};

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
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let endpoints: Vec<String> = args.endpoints.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    assert!(!endpoints.is_empty(), "--endpoints must name at least one endpoint");
    let clients = args.clients.max(1);
    let per_client = args.total.div_ceil(clients);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let value = vec![b'x'; args.value_bytes];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client_index in 0..clients {
        let endpoint = endpoints[client_index % endpoints.len()].clone();
        let value = value.clone();
        let key_space = args.key_space.max(1);
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
            for n in 0..per_client {
                if Instant::now() >= deadline {
                    break;
                }
                let key = format!("load/{:08}", (client_index * per_client + n) % key_space);
                let begun = Instant::now();
                match client.put(key, value.clone(), None).await {
                    Ok(_) => latencies.push(begun.elapsed()),
                    Err(_) => errors += 1,
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
    latencies.sort_unstable();
    println!(
        "clients={} puts={} errors={} seconds={:.2} puts_per_s={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
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
