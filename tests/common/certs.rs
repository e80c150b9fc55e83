//! Test certificates, generated at test time with rcgen (nothing is
//! committed): a CA, a server certificate it signs for `localhost`,
//! `gate.test`, `mock.test` and 127.0.0.1, and a self-signed impostor.

use futures_rustls::rustls::crypto::ring;
use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use futures_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::PathBuf;
use std::sync::Arc;

/// Names every test server certificate is valid for.
pub const NAMES: [&str; 4] = ["localhost", "gate.test", "mock.test", "127.0.0.1"];

/// A CA and one server certificate, written as PEM files in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA, kept to issue more certificates.
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// The server certificate chain and key (PEM).
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    /// A fresh CA with a server certificate for [`NAMES`] whose common name
    /// is `cn` (so tests can tell two certificates apart).
    pub fn new(cn: &str) -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "smtpgate test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let (cert_pem, key_pem) = leaf(cn, &NAMES, Some(&ca));
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki {
            dir,
            ca_pem: ca.pem(),
            ca,
            cert_pem,
            key_pem,
        };
        pki.write();
        pki
    }

    fn write(&self) {
        std::fs::write(self.ca_path(), &self.ca_pem).unwrap();
        std::fs::write(self.cert_path(), &self.cert_pem).unwrap();
        std::fs::write(self.key_path(), &self.key_pem).unwrap();
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// The `tls:` line of a gateway config using these files.
    pub fn tls_yaml(&self) -> String {
        format!(
            "tls: {{ cert: \"{}\", key: \"{}\" }}\n",
            self.cert_path().display(),
            self.key_path().display()
        )
    }

    /// A server configuration presenting the certificate (for mocks).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        server_config(&self.cert_pem, &self.key_pem)
    }

    /// A client configuration that trusts only this CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        Arc::new(
            ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Replaces the server certificate files with a new one from the same
    /// CA whose common name is `cn` (for reload tests).
    pub fn reissue(&mut self, cn: &str) {
        let (cert_pem, key_pem) = leaf(cn, &NAMES, Some(&self.ca));
        self.cert_pem = cert_pem;
        self.key_pem = key_pem;
        self.write();
    }
}

/// A leaf certificate for `names` with common name `cn`, signed by `ca` or
/// self-signed; returns (cert PEM, key PEM).
pub fn leaf(
    cn: &str,
    names: &[&str],
    ca: Option<&CertifiedIssuer<'_, KeyPair>>,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = match ca {
        Some(ca) => params.signed_by(&key, ca).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    (cert.pem(), key.serialize_pem())
}

/// A self-signed certificate for [`NAMES`]: valid names, untrusted issuer.
pub fn self_signed_config() -> Arc<ServerConfig> {
    let (cert, key) = leaf("impostor", &NAMES, None);
    server_config(&cert, &key)
}

/// A server configuration from PEM text.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Arc<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    Arc::new(
        ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}
