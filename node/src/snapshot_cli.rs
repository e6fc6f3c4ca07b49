//! `detcd snapshot status|restore`: etcdutl's snapshot commands for files saved from
//! detcd with `etcdctl snapshot save`. Restore takes etcdutl's flags and builds the
//! data dir of one member of a new cluster (see `storage::client_snapshot`); the member
//! then starts with the same `--name`, `--initial-cluster`, `--initial-cluster-token`
//! and `--initial-advertise-peer-urls`.

use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Flags;
use crate::env::fs_disk::FsDisk;
use crate::storage::client_snapshot::{self, human_size, RestorePlan, SnapshotStatus};

#[derive(Parser, Debug)]
#[command(name = "detcd snapshot", about = "Inspect and restore snapshots saved with `etcdctl snapshot save`")]
struct SnapshotCli {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OutputFormat {
    Simple,
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Hash, revision, total keys and size of a snapshot file.
    Status {
        file: String,
        #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
        write_out: OutputFormat,
    },
    /// Builds a member's data dir for a new cluster from a snapshot file.
    Restore {
        file: String,
        #[arg(long, default_value = "default")]
        name: String,
        #[arg(long, default_value = "default=http://localhost:2380")]
        initial_cluster: String,
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        #[arg(long, default_value = "http://localhost:2380")]
        initial_advertise_peer_urls: String,
        /// Default: ${name}.etcd
        #[arg(long)]
        data_dir: Option<String>,
        #[arg(long, default_value = "")]
        wal_dir: String,
    },
}

/// Runs `detcd snapshot ARGS...`; the process exit code.
pub fn main(args: &[String]) -> i32 {
    let cli = match SnapshotCli::try_parse_from(std::iter::once("detcd snapshot".to_string()).chain(args.iter().cloned())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let result = match cli.command {
        SnapshotCommand::Status { file, write_out } => status(&file, write_out),
        SnapshotCommand::Restore { file, name, initial_cluster, initial_cluster_token, initial_advertise_peer_urls, data_dir, wal_dir } => {
            let mut flags = vec![
                "detcd".to_string(),
                format!("--name={name}"),
                format!("--initial-cluster={initial_cluster}"),
                format!("--initial-cluster-token={initial_cluster_token}"),
                format!("--initial-advertise-peer-urls={initial_advertise_peer_urls}"),
                format!("--wal-dir={wal_dir}"),
            ];
            if let Some(dir) = data_dir {
                flags.push(format!("--data-dir={dir}"));
            }
            restore(&file, &flags)
        }
    };
    match result {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("Error: {message}");
            // etcdctl's exit code for a failed snapshot command.
            5
        }
    }
}

/// The file's bytes, read through the production disk of the `env` layer.
fn read(file: &str) -> Result<Vec<u8>, String> {
    use crate::env::Disk as _;
    let path = std::path::Path::new(file);
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| format!("open {file}: not a file name"))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        return Err(format!("open {file}: no such directory"));
    }
    let disk = FsDisk::open(dir).map_err(|e| format!("open {file}: {e}"))?;
    disk.read(name).map_err(|e| format!("open {file}: {e}"))
}

fn status(file: &str, write_out: OutputFormat) -> Result<(), String> {
    let SnapshotStatus { hash, revision, total_keys, total_size_bytes } = client_snapshot::status(&read(file)?)?;
    match write_out {
        OutputFormat::Simple => println!("{hash:x}, {revision}, {total_keys}, {}", human_size(total_size_bytes)),
        OutputFormat::Json => {
            println!("{{\"hash\":{hash},\"revision\":{revision},\"totalKey\":{total_keys},\"totalSize\":{total_size_bytes}}}")
        }
        OutputFormat::Table => {
            let cells = [format!("{hash:x}"), revision.to_string(), total_keys.to_string(), human_size(total_size_bytes)];
            let headers = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
            let widths: Vec<usize> = headers.iter().zip(&cells).map(|(h, c)| h.len().max(c.len()) + 2).collect();
            let rule: String = widths.iter().map(|w| format!("+{}", "-".repeat(*w))).collect::<String>() + "+";
            let centred = |text: &str, width: usize| {
                let left = (width - text.len()) / 2;
                format!("{}{text}{}", " ".repeat(left), " ".repeat(width - text.len() - left))
            };
            println!("{rule}");
            println!("{}|", headers.iter().zip(&widths).map(|(h, w)| format!("|{}", centred(h, *w))).collect::<String>());
            println!("{rule}");
            // etcd's table right-aligns numbers and sizes, left-aligns nothing here.
            println!("{}|", cells.iter().zip(&widths).map(|(c, w)| format!("|{:>width$} ", c, width = w - 1)).collect::<String>());
            println!("{rule}");
        }
    }
    Ok(())
}

fn restore(file: &str, flags: &[String]) -> Result<(), String> {
    let config = Flags::try_parse_from(flags).map_err(|e| e.to_string())?.resolve()?;
    // etcdutl refuses an existing data dir: a restore never writes over a member.
    if std::path::Path::new(&config.data_dir).exists() {
        return Err(format!("data-dir {:?} exists", config.data_dir));
    }
    let bytes = read(file)?;
    // Checked before anything is created.
    client_snapshot::decode(&bytes)?;
    let plan = RestorePlan { cluster_id: config.node.cluster_id, member_id: config.node.member_id, members: config.node.initial_peer_urls.clone() };
    let data_disk = FsDisk::open(format!("{}/member", config.data_dir)).map_err(|e| e.to_string())?;
    let wal_disk = FsDisk::open(&config.wal_dir).map_err(|e| e.to_string())?;
    let status = client_snapshot::restore(&bytes, &plan, Arc::new(data_disk), Arc::new(wal_disk))?;
    println!(
        "restored snapshot {file} (revision {}, {} keys) into {:?}: member {} ({:016x}) of a new cluster {:016x} with {} members",
        status.revision,
        status.total_keys,
        config.data_dir,
        config.name,
        config.node.member_id,
        config.node.cluster_id,
        config.members.len()
    );
    Ok(())
}
