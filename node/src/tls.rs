//! TLS as etcd's flags configure it, on rustls (ring): the client port's (`--cert-file`,
//! `--key-file`, `--trusted-ca-file`, `--client-cert-auth`, served by tonic's TLS) and
//! the peer port's (`--peer-*`, served by [`crate::env::tcp`] through tokio-rustls),
//! with `--peer-cert-allowed-cn` checked against the certificate a peer presents.
//!
//! Whether a listener or a connection uses TLS is its URL's scheme (`https://`), as in
//! etcd. Everything is read and checked at start-up: a missing file, a key that does not
//! match its certificate or a CA file without a certificate is a clear error before any
//! listener opens. Production only.

use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// One side's TLS files and checks, as the flags give them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: String,
    pub key_file: String,
    /// Empty: none.
    pub trusted_ca_file: String,
    /// Refuse connections without a certificate signed by the trusted CA.
    pub client_cert_auth: bool,
    /// Peers only: the common name a peer's certificate must carry (empty: any).
    pub allowed_cn: String,
    /// `--auto-tls` / `--peer-auto-tls`: a self-signed certificate is made when none is
    /// given, and peers do not verify each other's (as etcd: encryption without
    /// authentication).
    pub auto: bool,
}

impl TlsFiles {
    /// Whether a certificate was given at all (etcd: TLS is configured).
    pub fn is_set(&self) -> bool {
        !self.cert_file.is_empty() || !self.key_file.is_empty() || self.auto
    }

    /// With `auto` and no certificate given: makes (once) a self-signed certificate for
    /// `hosts` in `dir` (etcd's `<data-dir>/fixtures/client` or `/peer`) and uses it.
    pub fn with_auto_certificate(mut self, dir: &str, hosts: &[String]) -> Result<TlsFiles, String> {
        if !self.auto || !self.cert_file.is_empty() {
            return Ok(self);
        }
        let (cert_file, key_file) = (format!("{dir}/cert.pem"), format!("{dir}/key.pem"));
        let exists = |path: &str| std::path::Path::new(path).exists();
        if !(exists(&cert_file) && exists(&key_file)) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
            let made = rcgen::generate_simple_self_signed(hosts.to_vec()).map_err(|e| format!("cannot make a self-signed certificate: {e}"))?;
            write_private(&key_file, made.signing_key.serialize_pem().as_bytes())?;
            std::fs::write(&cert_file, made.cert.pem()).map_err(|e| format!("cannot write {cert_file}: {e}"))?;
        }
        self.cert_file = cert_file;
        self.key_file = key_file;
        Ok(self)
    }
}

/// Writes a private key readable by its owner only.
fn write_private(path: &str, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {path}: {e}"))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| format!("cannot write {path}: {e}"))
}

/// `--peer-auto-tls`: a peer's self-signed certificate cannot be verified, so it is
/// accepted (etcd's InsecureSkipVerify); the handshake's signatures are still checked.
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// rustls on ring, for every TLS configuration detcd builds (never the process default:
/// another crate in the build could enable a second provider).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process's rustls provider (tonic's server asks for the default).
pub fn install_provider() {
    // Fails only if one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read_certs(path: &str, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--{flag} {path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--{flag} {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("--{flag} {path}: no certificate in the file"));
    }
    Ok(certs)
}

fn read_key(path: &str, flag: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("--{flag} {path}: {e}"))
}

fn read_roots(path: &str, flag: &str) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path, flag)? {
        roots.add(cert).map_err(|e| format!("--{flag} {path}: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// The flag names of one side (`cert-file` or `peer-cert-file`, ...).
struct FlagNames {
    cert: &'static str,
    key: &'static str,
    ca: &'static str,
}

const CLIENT_FLAGS: FlagNames = FlagNames { cert: "cert-file", key: "key-file", ca: "trusted-ca-file" };
const PEER_FLAGS: FlagNames = FlagNames { cert: "peer-cert-file", key: "peer-key-file", ca: "peer-trusted-ca-file" };

/// A rustls server configuration from `files` (also how the client port's files are
/// checked at start-up: tonic reads the same files again).
fn server_config(files: &TlsFiles, names: &FlagNames) -> Result<rustls::ServerConfig, String> {
    let certs = read_certs(&files.cert_file, names.cert)?;
    let key = read_key(&files.key_file, names.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().map_err(|e| e.to_string())?;
    let builder = if files.client_cert_auth {
        if files.trusted_ca_file.is_empty() {
            return Err(format!("--{} is required to verify clients' certificates", names.ca));
        }
        let roots = read_roots(&files.trusted_ca_file, names.ca)?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider()).build().map_err(|e| format!("--{}: {e}", names.ca))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder.with_single_cert(certs, key).map_err(|e| format!("--{} and --{} do not make a usable pair: {e}", names.cert, names.key))
}

/// The client port's TLS for tonic, after checking the files make a usable configuration.
pub fn client_port_tls(files: &TlsFiles) -> Result<tonic::transport::ServerTlsConfig, String> {
    server_config(files, &CLIENT_FLAGS)?;
    let read = |path: &str, flag: &str| std::fs::read(path).map_err(|e| format!("--{flag} {path}: {e}"));
    let identity = tonic::transport::Identity::from_pem(read(&files.cert_file, CLIENT_FLAGS.cert)?, read(&files.key_file, CLIENT_FLAGS.key)?);
    let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
    if files.client_cert_auth {
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(&files.trusted_ca_file, CLIENT_FLAGS.ca)?)).client_auth_optional(false);
    }
    Ok(config)
}

/// The peer port's TLS: what a member dials with and what it accepts with.
pub struct PeerTls {
    pub connector: tokio_rustls::TlsConnector,
    pub acceptor: tokio_rustls::TlsAcceptor,
    allowed_cn: String,
}

impl PeerTls {
    pub fn from_files(files: &TlsFiles) -> Result<PeerTls, String> {
        let server = server_config(files, &PEER_FLAGS)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().map_err(|e| e.to_string())?;
        let builder = if files.auto && files.trusted_ca_file.is_empty() {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider())))
        } else if files.trusted_ca_file.is_empty() {
            return Err(format!("--{} is required for peer TLS: members verify each other's certificates", PEER_FLAGS.ca));
        } else {
            builder.with_root_certificates(read_roots(&files.trusted_ca_file, PEER_FLAGS.ca)?)
        };
        // A member presents its peer certificate when it dials, too (etcd's peers do).
        let client = builder
            .with_client_auth_cert(read_certs(&files.cert_file, PEER_FLAGS.cert)?, read_key(&files.key_file, PEER_FLAGS.key)?)
            .map_err(|e| format!("--{} and --{} do not make a usable pair: {e}", PEER_FLAGS.cert, PEER_FLAGS.key))?;
        Ok(PeerTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            allowed_cn: files.allowed_cn.clone(),
        })
    }

    /// The name a dialled peer's certificate must carry: the host of its address.
    pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string()).map_err(|e| format!("peer address {addr}: {e}"))
    }

    /// `--peer-cert-allowed-cn`: the certificate a peer connected with must carry it.
    pub fn check_peer_certificate(&self, presented: Option<&[CertificateDer<'_>]>) -> Result<(), String> {
        if self.allowed_cn.is_empty() {
            return Ok(());
        }
        let Some(leaf) = presented.and_then(|certs| certs.first()) else {
            return Err("the peer presented no certificate".to_string());
        };
        match common_name(leaf) {
            Some(name) if name == self.allowed_cn => Ok(()),
            Some(name) => Err(format!("CommonName authentication failed: peer certificate CN {name:?}, allowed {:?}", self.allowed_cn)),
            None => Err(format!("CommonName authentication failed: peer certificate has no CN, allowed {:?}", self.allowed_cn)),
        }
    }
}

/// The subject's common name of a DER certificate (the first CN attribute), or `None`
/// if the certificate has none or cannot be read. A small bounded DER walk: no
/// recursion, every length checked against what is left.
pub fn common_name(certificate: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version?, serial,
    // signature, issuer, validity, subject, ... }, ... }
    let (tag, certificate_body, _) = der_element(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, mut tbs, _) = der_element(certificate_body)?;
    if tag != 0x30 {
        return None;
    }
    // Skip version (explicit [0], optional), serial, signature, issuer, validity.
    let mut skipped = 0;
    while skipped < 4 {
        let (tag, _, rest) = der_element(tbs)?;
        tbs = rest;
        if tag != 0xA0 {
            skipped += 1;
        }
    }
    let (tag, mut subject, _) = der_element(tbs)?;
    if tag != 0x30 {
        return None;
    }
    // Name ::= SEQUENCE OF SET OF AttributeTypeAndValue ::= SEQUENCE { OID, value }
    const COMMON_NAME_OID: [u8; 3] = [0x55, 0x04, 0x03];
    while !subject.is_empty() {
        let (_, mut set, rest) = der_element(subject)?;
        subject = rest;
        while !set.is_empty() {
            let (_, attribute, rest) = der_element(set)?;
            set = rest;
            let (oid_tag, oid, value_part) = der_element(attribute)?;
            if oid_tag == 0x06 && oid == COMMON_NAME_OID {
                let (value_tag, value, _) = der_element(value_part)?;
                return match value_tag {
                    // UTF8String, PrintableString, T61String, IA5String
                    0x0C | 0x13 | 0x14 | 0x16 => String::from_utf8(value.to_vec()).ok(),
                    _ => None,
                };
            }
        }
    }
    None
}

/// One DER element at the start of `bytes`: (tag, contents, what follows).
fn der_element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *bytes.first()?;
    let first_length = *bytes.get(1)?;
    let (length, header) = if first_length < 0x80 {
        (usize::from(first_length), 2)
    } else {
        let length_bytes = usize::from(first_length & 0x7F);
        if length_bytes == 0 || length_bytes > 4 {
            return None;
        }
        let mut length = 0usize;
        for i in 0..length_bytes {
            length = (length << 8) | usize::from(*bytes.get(2 + i)?);
        }
        (length, 2 + length_bytes)
    };
    let end = header.checked_add(length)?;
    if end > bytes.len() {
        return None;
    }
    Some((tag, &bytes[header..end], &bytes[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `openssl req -newkey ec ... -subj /CN=member` and signed by a test CA whose
    /// CN is `detcd-test-ca` (the issuer's CN must not be taken for the subject's).
    const MEMBER_CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBwzCCAWigAwIBAgIUeh35wPjp+MWVAipMNy8kqTI4hSUwCgYIKoZIzj0EAwIw\nGDEWMBQGA1UEAwwNZGV0Y2QtdGVzdC1jYTAeFw0yNjExMjYxNjM2MjRaFw0yNjEx\nMjgxNjM2MjRaMBExDzANBgNVBAMMBm1lbWJlcjBZMBMGByqGSM49AgEGCCqGSM49\nAwEHA0IABByplque+zdu6Gp5mMb/POplyx3ADQ3+wpi39CXL4+Srlc6pViWDsmO1\nrXO+XGKdKVLRHXJYRzXSv8ww0QKuIxijgZYwgZMwGgYDVR0RBBMwEYcEfwAAAYIJ\nbG9jYWxob3N0MB0GA1UdJQQWMBQGCCsGAQUFBwMBBggrBgEFBQcDAjAJBgNVHRME\nAjAAMAsGA1UdDwQEAwIFoDAdBgNVHQ4EFgQUwaHzFxL03STwC976WW0xY1vKguIw\nHwYDVR0jBBgwFoAUcSX2Z0N+eN1oOHurt2g3aOjr230wCgYIKoZIzj0EAwIDSQAw\nRgIhAIzqKSRI5JiqR57PUpI0yBIPX2jsODzcbTZ/j0A1XbRhAiEAsVCfFf6OH8EO\nUfA2gxJglni6ZTAIH/Y1soHjL8162sI=\n-----END CERTIFICATE-----\n";

    #[test]
    fn common_name_of_a_real_certificate() {
        let der = CertificateDer::from_pem_slice(MEMBER_CERT_PEM.as_bytes()).expect("a PEM certificate");
        assert_eq!(common_name(&der).as_deref(), Some("member"));
        // Every truncation is read without a panic, and none finds a name it does not hold.
        for cut in 0..der.len() {
            assert!(matches!(common_name(&der[..cut]).as_deref(), None | Some("member")));
        }
    }

    #[test]
    fn der_lengths_are_bounded() {
        assert_eq!(der_element(&[0x30, 0x02, 1, 2, 9]), Some((0x30, &[1u8, 2][..], &[9u8][..])));
        assert_eq!(der_element(&[0x30, 0x82, 0x00, 0x01, 7]), Some((0x30, &[7u8][..], &[][..])));
        assert_eq!(der_element(&[0x30, 0x05, 1]), None);
        assert_eq!(der_element(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der_element(&[0x30]), None);
        // Nothing a damaged certificate holds panics.
        let mut junk = vec![0x30, 0x10];
        junk.extend_from_slice(&[0x30; 16]);
        assert_eq!(common_name(&junk), None);
    }
}
