//! TLS in both directions, on rustls with the `ring` provider.
//!
//! Server side: the listener certificate and key ([`server_config`]),
//! reloadable while the gateway runs ([`TlsServer::reload`]), and
//! [`MaybeTls`], the client stream a session runs over, which STARTTLS
//! turns from plain text into TLS in place. Client side: the verifying
//! configuration for the upstream ([`client_config`]), against the system
//! roots or a CA file, with an explicit opt-out that still checks
//! handshake signatures.
//!
//! Only TLS 1.2 and 1.3 are enabled (RFC 8996 retired the older versions).
//! Sessions resume by stateless tickets: with `tls.session_tickets`,
//! sealed with keys several instances share ([`tickets`]).

pub mod tickets;

use crate::config::{TlsFiles, Upstream};
use crate::filter::TlsInfo;
use crate::stream::Stream;
use futures::io::{AsyncRead, AsyncWrite};
use futures_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use futures_rustls::rustls::crypto::{ring, CryptoProvider};
use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use futures_rustls::rustls::version::{TLS12, TLS13};
use futures_rustls::rustls::{
    self, ClientConfig, CommonState, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use futures_rustls::TlsAcceptor;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

/// The protocol versions offered and accepted: TLS 1.3 and 1.2 only.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];

/// The crypto provider: `ring` (built without cmake, unlike aws-lc-rs).
/// There is no process-wide default with only `ring` enabled, so every
/// configuration is built with it explicitly.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The listener's provider: every suite of [`provider`], with the
/// AES-128-GCM ones first, because the listener chooses
/// (`ignore_client_order`) and most clients (OpenSSL, rustls) would pick
/// AES-256-GCM-SHA384. Their SHA-256 key schedule runs on the CPU's SHA
/// instructions where ring has them; SHA-384 never does, and it was the
/// largest cost of a resumed STARTTLS handshake.
fn server_provider() -> Arc<CryptoProvider> {
    let mut provider = ring::default_provider();
    // Stable: the order within each group stays ring's.
    provider
        .cipher_suites
        .sort_by_key(|suite| !PREFERRED_SUITES.contains(&suite.suite()));
    Arc::new(provider)
}

/// The suites the listener prefers when a client offers them: AES-128-GCM
/// with SHA-256, for TLS 1.3 and for TLS 1.2 with either certificate type.
pub const PREFERRED_SUITES: &[rustls::CipherSuite] = &[
    rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

/// A certificate or key file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// What is wrong, naming the file.
    pub text: String,
    /// The setting naming the file at fault: `tls.cert`, `tls.key` or
    /// `tls.session_tickets.key_file`.
    pub setting: &'static str,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for FileError {}

/// Reads every certificate of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no \"BEGIN CERTIFICATE\" block found",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

/// The listener configuration for a certificate chain and key: TLS 1.2
/// and 1.3, no client certificates. Fails when a file cannot be read or
/// parsed, or when the key does not belong to the certificate.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, FileError> {
    let certs = load_certs(&files.cert).map_err(|text| FileError {
        text,
        setting: "tls.cert",
    })?;
    let key = load_key(&files.key).map_err(|text| FileError {
        text,
        setting: "tls.key",
    })?;
    let mut config = ServerConfig::builder_with_provider(server_provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| FileError {
            text: format!("TLS setup failed: {e}"),
            setting: "tls.cert",
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| FileError {
            text: format!(
                "{} and {} cannot be used together: {e}",
                files.cert.display(),
                files.key.display()
            ),
            setting: "tls.key",
        })?;
    config.ignore_client_order = true;
    // One TLS 1.3 ticket per handshake, not rustls' two: a client resumes
    // with one and gets a fresh one each time (Postfix keeps one session
    // per destination), and each ticket costs a key derivation and, without
    // shared tickets, a slot of the session cache.
    config.send_tls13_tickets = 1;
    if let Some(t) = &files.session_tickets {
        let ticketer =
            tickets::SharedTickets::load(&t.key_file, t.lifetime_s).map_err(|e| FileError {
                text: format!("TLS session tickets: {e}"),
                setting: "tls.session_tickets.key_file",
            })?;
        config.ticketer = Arc::new(ticketer);
    }
    Ok(Arc::new(config))
}

/// The listener TLS configuration, swappable while sessions run: a new
/// connection uses the configuration current when it starts TLS; sessions
/// already under TLS keep theirs.
pub struct TlsServer {
    /// Where the certificate and key are read from (again on reload).
    files: TlsFiles,
    /// The configuration new handshakes use.
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsServer {
    /// Loads the certificate and key.
    pub fn load(files: &TlsFiles) -> Result<TlsServer, FileError> {
        Ok(TlsServer {
            files: files.clone(),
            current: RwLock::new(server_config(files)?),
        })
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }

    /// Re-reads the certificate and key. On failure the previous
    /// configuration stays in use, so a half-written file never takes TLS
    /// down.
    pub fn reload(&self) -> Result<(), FileError> {
        let new = server_config(&self.files)?;
        match self.current.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        Ok(())
    }
}

/// The facts filters and logs see about a TLS session.
pub fn info(state: &CommonState) -> TlsInfo {
    let version = match state.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_string(),
    };
    let cipher = state
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_else(|| "unknown".to_string());
    TlsInfo { version, cipher }
}

/// The client's stream: plain until STARTTLS (or from the start with
/// implicit TLS), TLS after.
pub enum MaybeTls<S> {
    /// Plain text.
    Plain(S),
    /// Under TLS.
    Tls(Box<futures_rustls::server::TlsStream<S>>),
    /// During a handshake, or after a failed one: no stream any more.
    Gone,
}

impl<S: Stream> MaybeTls<S> {
    /// True once the TLS handshake is done.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }

    /// Version and cipher of the TLS session, if there is one.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        match self {
            MaybeTls::Tls(s) => Some(info(s.get_ref().1)),
            _ => None,
        }
    }

    /// Runs the server side of the TLS handshake over the plain stream.
    /// On failure the stream is gone and the connection is over.
    pub async fn upgrade(&mut self, acceptor: TlsAcceptor) -> io::Result<()> {
        let plain = match std::mem::replace(self, MaybeTls::Gone) {
            MaybeTls::Plain(s) => s,
            other => {
                *self = other;
                return Err(io::Error::other("TLS is already active"));
            }
        };
        let tls = acceptor.accept(plain).await?;
        *self = MaybeTls::Tls(Box::new(tls));
        Ok(())
    }
}

/// The error for I/O on a stream lost in a failed handshake.
fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection lost in TLS handshake",
    )
}

impl<S: Stream> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            MaybeTls::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<S: Stream> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            MaybeTls::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_close(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            MaybeTls::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// The root certificates to verify the upstream against: those of
/// `ca_file` when given (and only those), else the operating system's.
pub fn load_roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "no system root certificates found{why}; install the CA bundle \
                     (e.g. ca-certificates) or set upstream.ca_file"
                ));
            }
        }
    }
    Ok(roots)
}

/// A client configuration that verifies the server against `ca_file`'s
/// certificates (else the system's roots): for the LDAP AUTH backend.
pub fn verified_client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(load_roots(ca_file)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The client configuration for the upstream: TLS 1.2/1.3, certificates
/// verified against [`load_roots`] — or, with `tls_verify: false`, not
/// verified at all (handshake signatures still are).
pub fn client_config(up: &Upstream) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let config = if up.tls_verify {
        builder
            .with_root_certificates(load_roots(up.ca_file.as_deref())?)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The name to send as SNI and to check the certificate against: the
/// configured `server_name`, else the host part of `addr` (`host:port`,
/// `[v6]:port`). An IP address is checked against the certificate's IP
/// addresses.
pub fn server_name(configured: Option<&str>, addr: &str) -> Result<ServerName<'static>, String> {
    let host = match configured {
        Some(name) => name,
        None => match addr.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(rest),
            None => addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr),
        },
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string()).map_err(|e| format!("bad server name {host:?}: {e}"))
}

/// The verifier behind `tls_verify: false`: accepts any certificate chain
/// and name, but still checks that the server signed the handshake with
/// the certificate's key, so the session is at least encrypted to whoever
/// holds that key.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_address_or_the_config() {
        let name = |c: Option<&str>, a: &str| server_name(c, a).unwrap().to_str().into_owned();
        assert_eq!(name(None, "mail.example.com:25"), "mail.example.com");
        assert_eq!(name(None, "127.0.0.1:25"), "127.0.0.1");
        assert_eq!(name(None, "[::1]:465"), "::1");
        assert_eq!(
            name(Some("smtp.example.net"), "10.0.0.5:25"),
            "smtp.example.net"
        );
        assert!(server_name(Some("bad name"), "x:25").is_err());
    }

    #[test]
    fn unreadable_files_are_reported_with_their_role() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("missing-cert.pem"),
            key: dir.path().join("missing-key.pem"),
            session_tickets: None,
        };
        let e = server_config(&files).unwrap_err();
        assert_eq!(e.setting, "tls.cert", "{e}");
        assert!(e.text.contains("missing-cert.pem"), "{e}");

        std::fs::write(&files.cert, "not a certificate\n").unwrap();
        let e = server_config(&files).unwrap_err();
        assert!(e.text.contains("no \"BEGIN CERTIFICATE\""), "{e}");
    }
}
