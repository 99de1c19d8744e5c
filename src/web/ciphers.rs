//! The TLS parameters the web config may name (Go's names), as rustls
//! knows them: what config validation accepts and what the server uses.
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::SupportedCipherSuite;

pub(crate) fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A TLS 1.2 cipher suite by its IANA (and Go) name.
pub fn cipher_suite(name: &str) -> Option<SupportedCipherSuite> {
    // Go also accepts the CHACHA20 names without the _SHA256 suffix.
    let canonical = match name {
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        n => n,
    };
    provider()
        .cipher_suites
        .into_iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .find(|s| format!("{:?}", s.suite()) == canonical)
}

/// Names of the TLS 1.2 suites `cipher_suites` may list.
pub fn cipher_suite_names() -> Vec<String> {
    provider()
        .cipher_suites
        .into_iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .map(|s| format!("{:?}", s.suite()))
        .collect()
}

/// A key-exchange group by its Go `tls.CurveID` name.
pub fn kx_group(name: &str) -> Option<&'static dyn SupportedKxGroup> {
    use rustls::crypto::ring::kx_group;
    match name {
        "X25519" => Some(kx_group::X25519),
        "CurveP256" => Some(kx_group::SECP256R1),
        "CurveP384" => Some(kx_group::SECP384R1),
        _ => None,
    }
}
