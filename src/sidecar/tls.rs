//! TLS for the sidecar, through rustls: the backends' client configuration (`--cacert`,
//! `--client-cert`/`--client-key`, `--insecure`, `--tls-max`) and the listener's server
//! configuration (`--cert`/`--key` reloaded when the files change, or a self-signed certificate
//! for `--auto-tls-host`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::flags::Config;
use super::format::Utc;

/// A TLS setup error, worded for the operator.
#[derive(Debug)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

fn err(msg: impl Into<String>) -> TlsError {
    TlsError(msg.into())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
static TLS13_AND_12: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(tls_max: &str) -> &'static [&'static rustls::SupportedProtocolVersion] {
    if tls_max == "1.2" {
        &TLS12_ONLY
    } else {
        &TLS13_AND_12
    }
}

/// Largest PEM file read (certificate chains, keys, CA bundles): a bound, so that a path such
/// as `/dev/zero` fails at once instead of reading gigabytes.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Read a whole PEM file of at most [`MAX_PEM_BYTES`].
fn read_pem(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} KiB: not a PEM file", MAX_PEM_BYTES / 1024),
        ));
    }
    Ok(bytes)
}

/// Read every certificate of a PEM file.
pub fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_pem(path).map_err(|e| format!("{path}: {e}"))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} is not valid certificate"));
    }
    Ok(certs)
}

/// Read the private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &str, password: &str) -> Result<PrivateKeyDer<'static>, String> {
    let bytes =
        read_pem(path).map_err(|e| format!("unable to read the private key {path}: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        // Neither does sidekick (Go's x509 decrypts only the legacy form below).
        return Err(
            "unable to read the private key: PKCS#8 encrypted keys are not supported; use a \
             legacy encrypted PEM key or decrypt it first (openssl pkey -in key.pem -out plain.pem)"
                .to_string(),
        );
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        if password.is_empty() {
            return Err("the private key is encrypted, please set the flag --key-password".into());
        }
        return legacy_pem::decrypt(&text, password)
            .map_err(|e| format!("unable to decrypt private key: {e}"));
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "the private key is not readable".to_string()
        }
        e => format!("unable to read the private key: {e}"),
    })
}

/// OpenSSL's legacy ("traditional") encrypted PEM keys, the form `--key-password` decrypts in
/// sidekick (Go's `x509.DecryptPEMBlock`): a `Proc-Type: 4,ENCRYPTED` header, a `DEK-Info:
/// <cipher>,<hex IV>` header, and the DER key encrypted in CBC mode under a key derived from the
/// password with `EVP_BytesToKey` (MD5, one round, the first 8 bytes of the IV as salt).
pub(crate) mod legacy_pem {
    use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
    use md5::{Digest, Md5};
    use rustls::pki_types::{
        PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    };

    /// The ciphers of `DEK-Info` that Go decrypts: name, key length, IV (= block) length.
    const CIPHERS: [(&str, usize, usize); 5] = [
        ("DES-CBC", 8, 8),
        ("DES-EDE3-CBC", 24, 8),
        ("AES-128-CBC", 16, 16),
        ("AES-192-CBC", 24, 16),
        ("AES-256-CBC", 32, 16),
    ];

    /// Decrypt the first encrypted key block of `pem` with `password`.
    pub(crate) fn decrypt(pem: &str, password: &str) -> Result<PrivateKeyDer<'static>, String> {
        let mut lines = pem.lines().map(str::trim);
        let label = lines
            .by_ref()
            .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
            .ok_or("no PEM block")?
            .to_string();
        let mut dek_info = None;
        let mut body = String::new();
        let mut in_headers = true;
        let mut ended = false;
        for line in lines.by_ref() {
            if line.starts_with("-----END ") {
                ended = true;
                break;
            }
            if in_headers {
                if let Some((name, value)) = line.split_once(':') {
                    if name.trim() == "DEK-Info" {
                        dek_info = Some(value.trim().to_string());
                    }
                    continue;
                }
                in_headers = false;
            }
            body.push_str(line);
        }
        if !ended {
            return Err(format!("the {label} block has no END line"));
        }
        let dek_info = dek_info.ok_or("no DEK-Info header")?;
        let (cipher, iv_hex) = dek_info
            .split_once(',')
            .ok_or_else(|| format!("malformed DEK-Info {dek_info:?}"))?;
        let &(_, key_len, iv_len) = CIPHERS
            .iter()
            .find(|c| c.0 == cipher)
            .ok_or_else(|| format!("unknown PEM cipher {cipher:?}"))?;
        let iv = hex(iv_hex).ok_or_else(|| format!("malformed IV {iv_hex:?} in DEK-Info"))?;
        if iv.len() != iv_len {
            return Err(format!(
                "the IV in DEK-Info has {} bytes, {cipher} needs {iv_len}",
                iv.len()
            ));
        }
        let mut data = super::base64_decode(&body).ok_or("the PEM body is not base64")?;
        let key = bytes_to_key(password.as_bytes(), &iv[..8], key_len);
        let plain_len = match cipher {
            "DES-CBC" => cbc::Decryptor::<des::Des>::new_from_slices(&key, &iv)
                .map_err(|e| e.to_string())?
                .decrypt_padded_mut::<Pkcs7>(&mut data)
                .map(<[u8]>::len),
            "DES-EDE3-CBC" => cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
                .map_err(|e| e.to_string())?
                .decrypt_padded_mut::<Pkcs7>(&mut data)
                .map(<[u8]>::len),
            "AES-128-CBC" => cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, &iv)
                .map_err(|e| e.to_string())?
                .decrypt_padded_mut::<Pkcs7>(&mut data)
                .map(<[u8]>::len),
            "AES-192-CBC" => cbc::Decryptor::<aes::Aes192>::new_from_slices(&key, &iv)
                .map_err(|e| e.to_string())?
                .decrypt_padded_mut::<Pkcs7>(&mut data)
                .map(<[u8]>::len),
            _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &iv)
                .map_err(|e| e.to_string())?
                .decrypt_padded_mut::<Pkcs7>(&mut data)
                .map(<[u8]>::len),
        }
        .map_err(|_| "x509: decryption password incorrect".to_string())?;
        data.truncate(plain_len);
        // A wrong password passes the padding check about once in 256 tries: the DER must
        // start with a SEQUENCE as well.
        if data.first() != Some(&0x30) {
            return Err("x509: decryption password incorrect".to_string());
        }
        match label.as_str() {
            "RSA PRIVATE KEY" => Ok(PrivatePkcs1KeyDer::from(data).into()),
            "EC PRIVATE KEY" => Ok(PrivateSec1KeyDer::from(data).into()),
            "PRIVATE KEY" => Ok(PrivatePkcs8KeyDer::from(data).into()),
            other => Err(format!("unsupported PEM block type {other:?}")),
        }
    }

    /// OpenSSL's `EVP_BytesToKey` with MD5 and one round.
    fn bytes_to_key(password: &[u8], salt: &[u8], len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 16);
        let mut prev: Vec<u8> = Vec::new();
        while out.len() < len {
            let mut h = Md5::new();
            h.update(&prev);
            h.update(password);
            h.update(salt);
            prev = h.finalize().to_vec();
            out.extend_from_slice(&prev);
        }
        out.truncate(len);
        out
    }

    fn hex(s: &str) -> Option<Vec<u8>> {
        let s = s.trim();
        if !s.len().is_multiple_of(2) {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect()
    }
}

/// Decode standard base64 (RFC 4648, `=` padding optional, no whitespace); `None` when `s` is
/// not base64.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Accepts any server certificate (`--insecure`). Signatures are still checked, so the
/// handshake itself is sound; only the identity is not verified.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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

/// The client configuration for HTTPS backends and their probes.
pub fn client_config(cfg: &Config) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(&cfg.tls_max))
        .map_err(|e| err(format!("TLS setup failed: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    if cfg.cacert.is_empty() {
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
    } else {
        let certs = load_certs(&cfg.cacert)
            .map_err(|e| err(format!("unable to load CA certificate: {e}")))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| err(format!("unable to load CA certificate: {e}")))?;
        }
    }
    let builder = builder.with_root_certificates(roots);
    let mut config = if cfg.client_cert.is_empty() {
        builder.with_no_client_auth()
    } else {
        let certs = load_certs(&cfg.client_cert)
            .map_err(|e| err(format!("unable to load client certificate: {e}")))?;
        let key = load_key(&cfg.client_key, "")
            .map_err(|e| err(format!("unable to load client key {}: {e}", cfg.client_key)))?;
        builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| err(format!("unable to use the client certificate: {e}")))?
    };
    if cfg.insecure {
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(NoVerify(provider)));
    }
    Ok(config)
}

// ===== the listener =====

/// The listener's certificate, swapped in place when the files change.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, String> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unusable private key: {e}"))?;
    Ok(CertifiedKey::new(certs, signing))
}

/// Load `--cert`/`--key` as sidekick does (messages included).
pub fn load_pair(cert: &str, key: &str, password: &str) -> Result<CertifiedKey, String> {
    let certs = load_certs(cert).map_err(|e| format!("unable to read the public key: {e}"))?;
    let key_der = load_key(key, password)?;
    let pair = certified_key(certs, key_der)?;
    // A key that does not match the certificate fails every handshake: refuse it here.
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(
            format!("the private key {key} does not match the certificate {cert}"),
        ),
        Err(e) => Err(format!(
            "unable to check the private key {key} against the certificate {cert}: {e}"
        )),
    }
}

impl CertStore {
    /// A store holding this certificate.
    pub fn new(key: CertifiedKey) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: ArcSwap::from_pointee(key),
        })
    }

    /// Replace the certificate.
    pub fn set(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Watch `--cert`/`--key` and load them again when either changes (polled every `every`; a
/// Kubernetes secret volume swaps a symlink, which changes the target's modification time too).
/// A pair that fails to load keeps the previous certificate and is reported through `report`.
/// Ends when `stop` is cancelled.
pub async fn watch(
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
    password: String,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
    report: impl Fn(String) + Send + 'static,
) {
    let mut seen = (mtime(&cert), mtime(&key));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = (mtime(&cert), mtime(&key));
        if now == seen {
            continue;
        }
        let (c, k) = (cert.to_string_lossy(), key.to_string_lossy());
        match load_pair(&c, &k, &password) {
            Ok(pair) => {
                store.set(pair);
                seen = now;
            }
            Err(e) => {
                report(format!(
                    "unable to reload the certificate {c}: {e}; the running certificate stays"
                ));
                // Try again at the next tick only if the files change once more.
                seen = now;
            }
        }
    }
}

/// A self-signed listener certificate for `--auto-tls-host` and what is printed about it.
#[derive(Debug)]
pub struct AutoCert {
    /// The certificate and its key.
    pub key: CertifiedKey,
    /// The certificate in PEM, served at `/v1/certificates`.
    pub pem: String,
    /// The lines printed at start (fingerprint and public key hash).
    pub banner: String,
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hex_pairs(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Generate a self-signed ECDSA P-256 certificate valid for a year for the comma-separated
/// `hosts` (IP addresses become IP SANs, anything else DNS SANs).
pub fn auto_cert(hosts: &str) -> Result<AutoCert, TlsError> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
        PublicKeyData, SanType,
    };
    let names: Vec<&str> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    if names.is_empty() {
        return Err(err("--auto-tls-host needs at least one host name"));
    }
    let mut params = CertificateParams::default();
    for n in &names {
        let san = match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                (*n).try_into()
                    .map_err(|e| err(format!("--auto-tls-host: bad host name {n:?}: {e}")))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Acme Co");
    // Not a CA (sidekick's is): webpki-based clients refuse a CA certificate as a server's
    // own, while Go and OpenSSL clients accept a self-signed leaf they were told to trust.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let today = Utc::from(SystemTime::now());
    let next = Utc::from(SystemTime::now() + Duration::from_secs(365 * 86_400));
    params.not_before = rcgen::date_time_ymd(today.year as i32, today.month as u8, today.day as u8);
    params.not_after = rcgen::date_time_ymd(next.year as i32, next.month as u8, next.day as u8);
    let mut serial = [0u8; 16];
    for b in &mut serial {
        *b = fastrand::u8(..);
    }
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| err(format!("unable to generate a key: {e}")))?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| err(format!("unable to generate a certificate: {e}")))?;
    let der = cert.der().clone();
    let fp = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    let pk = ring::digest::digest(&ring::digest::SHA256, &key_pair.subject_public_key_info());
    let banner = format!(
        "Generated TLS certificate for host '{hosts}'\n\nCertificate: {}\n             {}\nPublic Key:  {}\n\n",
        hex_pairs(&fp.as_ref()[..16]),
        hex_pairs(&fp.as_ref()[16..]),
        base64(pk.as_ref()),
    );
    let key_der = PrivateKeyDer::try_from(key_pair.serialize_der())
        .map_err(|e| err(format!("unable to use the generated key: {e}")))?;
    let key = certified_key(vec![der], key_der).map_err(err)?;
    Ok(AutoCert {
        key,
        pem: cert.pem(),
        banner,
    })
}

/// The listener's server configuration over a certificate store: TLS 1.2 up to `--tls-max`,
/// HTTP/1.1 over ALPN.
pub fn server_config(
    store: Arc<CertStore>,
    tls_max: &str,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(tls_max))
        .map_err(|e| err(format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn auto_cert_prints_fingerprint() {
        let c = auto_cert("localhost,127.0.0.1").unwrap();
        assert!(c.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let lines: Vec<&str> = c.banner.lines().collect();
        assert_eq!(
            lines[0],
            "Generated TLS certificate for host 'localhost,127.0.0.1'"
        );
        assert!(lines[2].starts_with("Certificate: "));
        assert_eq!(lines[2].len(), "Certificate: ".len() + 16 * 3 - 1);
        assert!(lines[4].starts_with("Public Key:  "));
        assert!(auto_cert(" , ").is_err());
    }

    #[test]
    fn base64_decode_inverts_encode() {
        for input in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0xff, 0, 0x80],
        ] {
            assert_eq!(base64_decode(&base64(input)).as_deref(), Some(input));
        }
        assert_eq!(base64_decode("Zg"), Some(b"f".to_vec()));
        assert_eq!(base64_decode("Z"), None);
        assert_eq!(base64_decode("Zm9v!"), None);
    }

    /// Keys made with OpenSSL 3 (`openssl rsa -traditional -aes256 ...`, `-des3`, `openssl ec
    /// -aes128`, `openssl pkcs8 -topk8 -v2 aes256`), password `sidekick-pass`; test data only.
    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");
    const PASSWORD: &str = "sidekick-pass";

    fn plain(name: &str) -> Vec<u8> {
        load_key(&format!("{DIR}/{name}"), "")
            .unwrap()
            .secret_der()
            .to_vec()
    }

    #[test]
    fn key_password_decrypts_legacy_encrypted_keys() {
        let rsa = plain("rsa.pem");
        let ec = plain("ec.pem");
        for (file, want) in [
            ("rsa-aes256.pem", &rsa),
            ("rsa-des3.pem", &rsa),
            ("ec-aes128.pem", &ec),
        ] {
            let key = load_key(&format!("{DIR}/{file}"), PASSWORD)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(key.secret_der(), &want[..], "{file}");
        }
        // The decrypted key signs for its certificate.
        load_pair(
            &format!("{DIR}/rsa-cert.pem"),
            &format!("{DIR}/rsa-aes256.pem"),
            PASSWORD,
        )
        .unwrap();
    }

    #[test]
    fn key_password_errors_say_what_is_wrong() {
        let e = load_key(&format!("{DIR}/rsa-aes256.pem"), "").unwrap_err();
        assert_eq!(
            e,
            "the private key is encrypted, please set the flag --key-password"
        );
        for file in ["rsa-aes256.pem", "rsa-des3.pem", "ec-aes128.pem"] {
            let e = load_key(&format!("{DIR}/{file}"), "wrong").unwrap_err();
            assert!(e.contains("password incorrect"), "{file}: {e}");
        }
        let e = load_key(&format!("{DIR}/ec-pkcs8-encrypted.pem"), PASSWORD).unwrap_err();
        assert!(e.contains("PKCS#8 encrypted keys are not supported"), "{e}");
        let e = legacy_pem::decrypt(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: RC2-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "x",
        )
        .unwrap_err();
        assert!(e.contains("unknown PEM cipher \"RC2-CBC\""), "{e}");
    }
}
