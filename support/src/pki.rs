//! A throwaway PKI for TLS tests, made at run time with `rcgen`: a CA and
//! a server certificate it signed for `localhost` and `127.0.0.1`, written
//! as PEM files into a test's temporary folder. The server's key is ECDSA
//! P-256, or RSA-2048 ([`TestPki::create_rsa`]): ring cannot generate RSA
//! keys, so that one is a fixed test key shipped beside this file
//! (`test-rsa2048.pem`, made with `openssl genpkey -algorithm RSA`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::child::Spawned;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A PKCS#8 RSA-2048 private key, for tests only.
const RSA_2048: &str = include_str!("test-rsa2048.pem");

/// The PEM files of a test CA and of a server certificate it signed.
#[derive(Debug)]
pub struct TestPki {
    /// The CA certificate (what a client trusts: `--ca`).
    pub ca: PathBuf,
    /// The server's certificate chain: its certificate, then the CA's.
    pub cert: PathBuf,
    /// The server's private key (PKCS#8).
    pub key: PathBuf,
}

impl TestPki {
    /// `server` (the switchboard-server binary) on 127.0.0.1:0 with two
    /// workers, serving TLS with this certificate and key, then `args`.
    pub fn spawn_server(&self, server: &str, args: &[&str]) -> Spawned {
        let mut cmd = Command::new(server);
        cmd.args(["--listen", "127.0.0.1:0", "--workers", "2", "--tls-cert"])
            .arg(&self.cert)
            .arg("--tls-key")
            .arg(&self.key)
            .args(args)
            .stdin(Stdio::null());
        Spawned::spawn(&mut cmd)
    }

    /// A TLS client configuration (ring, TLS 1.2 and 1.3) that trusts this
    /// CA alone.
    pub fn client_config(&self) -> std::sync::Arc<switchboard::rustls::ClientConfig> {
        use switchboard::rustls;
        use switchboard::rustls::pki_types::pem::PemObject;
        use switchboard::rustls::pki_types::CertificateDer;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(&self.ca).expect("the CA loads")).expect("the CA is usable");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        std::sync::Arc::new(config)
    }

    /// Makes the CA and the server certificate (an ECDSA P-256 key) and
    /// writes `ca.pem`, `cert.pem` and `key.pem` into `dir`.
    pub fn create(dir: &Path) -> TestPki {
        TestPki::create_with(dir, KeyPair::generate().expect("server key"))
    }

    /// As [`create`](TestPki::create), with an RSA-2048 server key (the
    /// costliest common handshake for a server: an RSA signature each).
    pub fn create_rsa(dir: &Path) -> TestPki {
        TestPki::create_with(dir, KeyPair::from_pem(RSA_2048).expect("the shipped RSA test key"))
    }

    fn create_with(dir: &Path, key: KeyPair) -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Switchboard test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");

        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server parameters");
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca_cert, &ca_key).expect("server certificate");

        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        TestPki {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("cert.pem", format!("{}{}", cert.pem(), ca_cert.pem())),
            key: write("key.pem", key.serialize_pem()),
        }
    }
}
