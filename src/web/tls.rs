//! rustls server configuration from the validated web config.
use std::sync::Arc;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite,
};

use super::config::{ClientAuth, Source, Tls, TlsVersion};

use super::ciphers::{cipher_suite, kx_group, provider};

/// PEM bytes of a source (files are read now, bounded as `read_file` bounds them).
pub fn read(src: &Source, field: &str) -> Result<Vec<u8>, String> {
    match src {
        Source::Inline(s) => Ok(s.as_bytes().to_vec()),
        Source::File(p) => {
            super::read_file(p).map_err(|e| format!("tls_server_config.{field}: {e}"))
        }
    }
}

/// Accepts any client certificate without verifying it (Go's
/// RequestClientCert and RequireAnyClientCert); handshake signatures are
/// still checked, so the client holds the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Build the server configuration, reading every file now.
pub fn server_config(t: &Tls) -> Result<Arc<ServerConfig>, String> {
    let mut p = provider();
    if !t.cipher_suites.is_empty() {
        // The list orders TLS 1.2 suites only; TLS 1.3 suites stay as rustls
        // orders them (as in Go, where cipher_suites does not apply to 1.3).
        let mut suites: Vec<SupportedCipherSuite> = p
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        suites.extend(t.cipher_suites.iter().filter_map(|n| cipher_suite(n)));
        p.cipher_suites = suites;
    }
    if !t.curve_preferences.is_empty() {
        p.kx_groups = t
            .curve_preferences
            .iter()
            .filter_map(|n| kx_group(n))
            .collect();
    }
    let algs = p.signature_verification_algorithms;
    let p = Arc::new(p);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| *v >= t.min_version && *v <= t.max_version)
    .map(|(_, v)| v)
    .collect();
    let builder = ServerConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e} (check min_version, max_version and cipher_suites together)"))?;
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match t.client_auth {
        ClientAuth::NoClientCert => None,
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            Some(Arc::new(AnyClientCert {
                mandatory: t.client_auth == ClientAuth::RequireAnyClientCert,
                algs,
            }))
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let src = t
                .client_ca
                .as_ref()
                .ok_or("tls_server_config.client_ca_file: required by client_auth_type")?;
            let pem = read(src, "client_ca_file")?;
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
                roots
                    .add(c)
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            }
            if roots.is_empty() {
                return Err(
                    "tls_server_config.client_ca_file: no PEM certificate found".to_string()
                );
            }
            let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), p.clone());
            let b = if t.client_auth == ClientAuth::VerifyClientCertIfGiven {
                b.allow_unauthenticated()
            } else {
                b
            };
            Some(
                b.build()
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?,
            )
        }
    };
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let cert_pem = read(&t.cert, "cert_file")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config.cert_file: {e}"))?;
    if certs.is_empty() {
        return Err("tls_server_config.cert_file: no PEM certificate found".into());
    }
    let key_pem = read(&t.key, "key_file")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("tls_server_config.key_file: no usable PEM private key ({e})"))?;
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config.key_file: does not fit cert_file: {e}"))?;
    cfg.ignore_client_order = t.prefer_server_cipher_suites;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
