//! TLS end to end: certificates made by `openssl` in the test, the real `etcdctl` with
//! `--cacert --cert --key`, `curl` for `/health` over https, a three-member cluster whose
//! peers speak mutual TLS, and a member whose certificate carries the wrong common name
//! refused by its peers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use detcd_tests::{detcd, etcdctl, etcdctl_for, wait_for, Cluster};

/// A CA and certificates signed by it (EC P-256), each usable as server and client
/// certificate for 127.0.0.1 / localhost, as etcd's documentation makes them.
struct Certificates {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Certificates {
    fn new(dir: &Path, ca_name: &str) -> Certificates {
        let dir = dir.join(ca_name);
        std::fs::create_dir_all(&dir).expect("cert dir");
        openssl(&dir, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", &format!("/CN={ca_name}")]);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n",
        )
        .expect("ext file");
        Certificates { dir }
    }

    /// Makes `<name>.pem` / `<name>.key` with common name `common_name`.
    fn issue(&self, name: &str, common_name: &str) {
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        openssl(&self.dir, &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &format!("/CN={common_name}")]);
        openssl(&self.dir, &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &pem, "-days", "2", "-extfile", "ext.cnf"]);
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn ca(&self) -> String {
        self.path("ca.pem")
    }
}

/// etcdctl with TLS flags.
fn etcdctl_tls(endpoint: &str, certs: &Certificates, client: Option<&str>, args: &[&str]) -> detcd_tests::Etcdctl {
    let ca = format!("--cacert={}", certs.ca());
    let mut all: Vec<String> = vec![ca, "--dial-timeout=3s".to_string(), "--command-timeout=5s".to_string()];
    if let Some(name) = client {
        all.push(format!("--cert={}", certs.path(&format!("{name}.pem"))));
        all.push(format!("--key={}", certs.path(&format!("{name}.key"))));
    }
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    etcdctl(endpoint, &all, None)
}

fn curl_tls(url: &str, certs: &Certificates, client: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}", "--cacert", &certs.ca()])
        .args(["--cert", &certs.path(&format!("{client}.pem")), "--key", &certs.path(&format!("{client}.key")), url])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_string(), code.to_string())
}

/// One member with `https` client URLs and `--client-cert-auth`: etcdctl with a
/// certificate of the CA works, without one or with another CA's it is refused; `/health`
/// over https.
#[test]
fn client_tls_with_client_certificate_auth() {
    let scratch = tempdir("client");
    let certs = Certificates::new(&scratch, "detcd-test-ca");
    certs.issue("server", "member");
    certs.issue("client", "alice");
    let other = Certificates::new(&scratch, "other-ca");
    other.issue("client", "alice");
    let (cert, key, ca) = (certs.path("server.pem"), certs.path("server.key"), certs.ca());
    let mut cluster = Cluster::prepare_with_schemes(1, &["--cert-file", &cert, "--key-file", &key, "--trusted-ca-file", &ca, "--client-cert-auth"], "https", "http");
    cluster.start_member(0);
    let endpoint = cluster.members[0].endpoint();
    let ready = wait_for(Duration::from_secs(20), || (etcdctl_tls(&endpoint, &certs, Some("client"), &["put", "tls-key", "v1"]).code == 0).then_some(()));
    assert!(ready.is_some(), "no write over TLS\n{}", cluster.diagnostics());
    let got = etcdctl_tls(&endpoint, &certs, Some("client"), &["get", "tls-key"]);
    assert_eq!((got.code, got.stdout.as_str()), (0, "tls-key\nv1\n"), "{got:?}");

    // No client certificate: refused by the server's handshake.
    let anonymous = etcdctl_tls(&endpoint, &certs, None, &["get", "tls-key"]);
    assert_ne!(anonymous.code, 0, "{anonymous:?}");
    // A certificate of another CA: refused.
    let stranger = etcdctl_tls(&endpoint, &other, Some("client"), &["get", "tls-key"]);
    assert_ne!(stranger.code, 0, "{stranger:?}");
    // Plain text to an https port: refused.
    let plain = etcdctl_for(10, &endpoint, &["--dial-timeout=2s", "--command-timeout=3s", "get", "tls-key"]);
    assert_ne!(plain.code, 0, "{plain:?}");

    assert_eq!(curl_tls(&format!("https://{endpoint}/health"), &certs, "client"), (r#"{"health":"true"}"#.to_string(), "200".to_string()));

    // With auth enabled, a request without a token is the user its certificate names
    // (the client certificate's CN is "alice"), as etcd.
    for step in detcd_tests::AUTH_SETUP_ALICE_WRITES_APP {
        let out = etcdctl_tls(&endpoint, &certs, Some("client"), step);
        assert_eq!(out.code, 0, "{step:?}: {out:?}");
    }
    let permitted = etcdctl_tls(&endpoint, &certs, Some("client"), &["put", "app/by-certificate", "v"]);
    assert_eq!(permitted.code, 0, "{permitted:?}");
    let denied = etcdctl_tls(&endpoint, &certs, Some("client"), &["put", "elsewhere", "v"]);
    assert!(denied.stderr.contains("etcdserver: permission denied"), "{denied:?}");
}

/// Three members whose peers speak mutual TLS (`https` peer URLs, `--peer-client-cert-
/// auth`, `--peer-cert-allowed-cn member`): they elect a leader and replicate. A member
/// whose certificate names someone else is refused by its peers: with one good member
/// down, the other good member and it make no quorum, and no write succeeds.
#[test]
fn peer_mutual_tls_and_a_wrong_common_name_refused() {
    let scratch = tempdir("peer");
    let certs = Certificates::new(&scratch, "detcd-test-ca");
    certs.issue("member", "member");
    certs.issue("intruder", "intruder");
    let peer_flags = |name: &str| -> Vec<String> {
        vec![
            format!("--peer-cert-file={}", certs.path(&format!("{name}.pem"))),
            format!("--peer-key-file={}", certs.path(&format!("{name}.key"))),
            format!("--peer-trusted-ca-file={}", certs.ca()),
            "--peer-client-cert-auth".to_string(),
            "--peer-cert-allowed-cn=member".to_string(),
        ]
    };
    let mut cluster = Cluster::prepare_with_schemes(3, &[], "http", "https");
    for i in 0..2 {
        let flags = peer_flags("member");
        cluster.start_member_with(i, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let flags = peer_flags("intruder");
    cluster.start_member_with(2, &flags.iter().map(String::as_str).collect::<Vec<_>>());
    let endpoints = [cluster.members[0].endpoint(), cluster.members[1].endpoint()].join(",");
    let written = wait_for(Duration::from_secs(20), || (etcdctl_for(10, &endpoints, &["put", "peer-tls", "v1"]).code == 0).then_some(()));
    assert!(written.is_some(), "the two good members wrote nothing over peer TLS\n{}", cluster.diagnostics());
    let replicated = wait_for(Duration::from_secs(10), || {
        let got = etcdctl(&cluster.members[1].endpoint(), &["get", "peer-tls", "--consistency=s", "--print-value-only"], None);
        (got.stdout.trim() == "v1").then_some(())
    });
    assert!(replicated.is_some(), "{}", cluster.diagnostics());
    let refused = wait_for(Duration::from_secs(10), || {
        (cluster.log(0) + &cluster.log(1)).contains("CommonName authentication failed").then_some(())
    });
    assert!(refused.is_some(), "no member refused the intruder\n{}", cluster.diagnostics());

    // Member 1 down: member 0 and the intruder are two of three, but the intruder's
    // answers never arrive, so nothing commits.
    cluster.kill_member(1);
    let put = etcdctl_for(15, &cluster.members[0].endpoint(), &["--command-timeout=4s", "put", "peer-tls", "v2"]);
    assert_ne!(put.code, 0, "a write committed with a refused member's votes: {put:?}");
    cluster.start_member_with(1, &peer_flags("member").iter().map(String::as_str).collect::<Vec<_>>());
    let again = wait_for(Duration::from_secs(20), || (etcdctl_for(10, &endpoints, &["put", "peer-tls", "v3"]).code == 0).then_some(()));
    assert!(again.is_some(), "{}", cluster.diagnostics());
}

/// Inconsistent TLS settings stop start-up with etcd's words.
#[test]
fn tls_settings_checked_at_start() {
    let https_without_cert = detcd(&["--listen-client-urls", "https://127.0.0.1:1", "--advertise-client-urls", "https://127.0.0.1:1"]);
    assert_eq!(
        (https_without_cert.code, https_without_cert.stderr.trim()),
        (2, "detcd: TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:1 with HTTPS scheme")
    );
    let peer_without_cert = detcd(&["--listen-peer-urls", "https://127.0.0.1:1", "--initial-advertise-peer-urls", "https://127.0.0.1:1"]);
    assert_eq!(
        (peer_without_cert.code, peer_without_cert.stderr.trim()),
        (2, "detcd: cannot listen on TLS for 127.0.0.1:1: KeyFile and CertFile are not presented")
    );
    let scratch = tempdir("settings");
    let data_dir = scratch.join("d.etcd").display().to_string();
    let missing = detcd(&["--data-dir", &data_dir, "--cert-file", "/nonexistent/cert.pem", "--key-file", "/nonexistent/key.pem", "--listen-client-urls", "https://127.0.0.1:1", "--advertise-client-urls", "https://127.0.0.1:1"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("--cert-file /nonexistent/cert.pem"), "{missing:?}");
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("detcd-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `--auto-tls --peer-auto-tls`: each member makes its own self-signed certificates
/// (under `<data-dir>/fixtures`), peers speak TLS without verifying each other (as etcd),
/// and clients connect with `--insecure-skip-tls-verify`.
#[test]
fn auto_tls_for_clients_and_peers() {
    let mut cluster = Cluster::prepare_with_schemes(3, &["--auto-tls", "--peer-auto-tls"], "https", "https");
    for i in 0..3 {
        cluster.start_member(i);
    }
    let insecure = ["--insecure-skip-tls-verify", "--insecure-transport=false", "--dial-timeout=3s", "--command-timeout=5s"];
    let with = |more: &[&str]| -> Vec<String> { insecure.iter().chain(more).map(|s| s.to_string()).collect() };
    let e0 = cluster.members[0].endpoint();
    let written = wait_for(Duration::from_secs(20), || {
        let args = with(&["put", "auto-tls", "v1"]);
        (etcdctl(&e0, &args.iter().map(String::as_str).collect::<Vec<_>>(), None).code == 0).then_some(())
    });
    assert!(written.is_some(), "{}", cluster.diagnostics());
    let e2 = cluster.members[2].endpoint();
    let args = with(&["get", "auto-tls", "--print-value-only"]);
    let got = etcdctl(&e2, &args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_eq!((got.code, got.stdout.trim()), (0, "v1"), "{got:?}");
    for i in 0..3 {
        let fixtures = cluster.members[i].data_dir.join("fixtures");
        assert!(fixtures.join("client/cert.pem").exists() && fixtures.join("peer/key.pem").exists(), "{fixtures:?}");
    }
}
