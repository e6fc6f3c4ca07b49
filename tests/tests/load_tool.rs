//! The load tool (`detcd-load`) against detcd and against etcd 3.4: the side-by-side
//! benchmark is only as good as the tool, so its light client (`--client raw`, hand-encoded
//! messages over h2) must be answered by both servers in every mode it serves, write what
//! `etcd-client` writes, and count a refused request as an error.

use std::process::Command;

use detcd_tests::{etcdctl, runtime, start_etcd, wait_writable, Cluster};

/// Runs the load tool (4 clients, `total` requests) and returns its one-line report.
fn run_load(endpoint: &str, mode: &str, client: &str, total: usize, extra_args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_detcd-load"))
        .args(["--endpoints", endpoint, "--mode", mode, "--client", client])
        .args(["--clients", "4", "--total", &total.to_string(), "--key-space", "100", "--max-seconds", "30"])
        .args(extra_args)
        .output()
        .expect("detcd-load runs");
    assert!(output.status.success(), "detcd-load {mode}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The value of `name=` in a report line.
fn field<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name} in {report}"))
}

#[test]
fn the_load_tools_light_client_is_answered_by_detcd_and_etcd() {
    let mut cluster = Cluster::start(1, &[]);
    let rt = runtime();
    wait_writable(&rt, &mut cluster, 0);
    let etcd = start_etcd(cluster.scratch_dir());
    for (server, endpoint) in [("detcd", cluster.members[0].endpoint()), ("etcd", etcd.endpoint.clone())] {
        for mode in ["put", "get", "get-serializable", "txn", "delete", "put"] {
            let report = run_load(&endpoint, mode, "raw", 200, &[]);
            assert_eq!((field(&report, "puts"), field(&report, "errors")), ("200", "0"), "{server} {mode}: {report}");
        }
        // The light client's put wrote the same key and value the etcd-client path writes.
        let value = etcdctl(&endpoint, &["get", "load/00000007", "--print-value-only"], None);
        assert_eq!(value.stdout, format!("{}\n", "x".repeat(256)), "{server}: {value:?}");
        let report = run_load(&endpoint, "put", "etcd-client", 200, &["--value-bytes", "3"]);
        assert_eq!(field(&report, "errors"), "0", "{server}: {report}");
        assert_eq!(etcdctl(&endpoint, &["get", "load/00000007", "--print-value-only"], None).stdout, "xxx\n", "{server}");
        // A request the server refuses counts as an error, not as an operation done.
        let refused = run_load(&endpoint, "put", "raw", 4, &["--value-bytes", "1600000"]);
        assert_eq!((field(&refused, "puts"), field(&refused, "errors")), ("0", "4"), "{server}: {refused}");
    }
}
