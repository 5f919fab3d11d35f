//! The HTTP/1.1 connector shared by the health probes and the ready-made [`Client`](crate::Client).
//!
//! HTTP/1.1 on purpose: the balancer keeps the caller's `Host` header (S3 SigV4 signs it), and on
//! HTTP/2 the `:authority` comes from the URI, which a server may check against `Host`.
//!
//! When a host name is fanned out into one endpoint per address (`rr_dns`), requests go to the
//! address but TLS must still verify the certificate against the host name: the connector looks
//! the address up in a table of server names kept by the DNS refresher.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::client::legacy::connect::HttpConnector;

/// `ip:port` authority → the host name TLS must verify against.
#[derive(Clone, Debug, Default)]
pub(crate) struct ServerNames(Arc<ArcSwap<HashMap<String, String>>>);

impl ServerNames {
    pub(crate) fn insert(&self, authority: String, host: String) {
        self.0.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(authority.clone(), host.clone());
            m
        });
    }

    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn lookup(&self, authority: &str) -> Option<String> {
        self.0.load().get(authority).cloned()
    }
}

#[cfg(feature = "tls")]
pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
pub(crate) type Connector = HttpConnector;

fn http_connector(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http
}

/// The default rustls configuration: the system's root certificates, TLS 1.2 and 1.3.
#[cfg(feature = "tls")]
pub(crate) fn default_tls_config() -> Result<rustls::ClientConfig, crate::Error> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A bad system certificate should not make every backend unreachable: skip it.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::Error::config(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cfg)
}

#[cfg(feature = "tls")]
pub(crate) fn connector(
    connect_timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
    names: ServerNames,
) -> Result<Connector, crate::Error> {
    let mut cfg = match tls {
        Some(cfg) => rustls::ClientConfig::clone(&cfg),
        None => default_tls_config()?,
    };
    // hyper-rustls sets ALPN from the enabled protocols (HTTP/1.1 only) and refuses a preset one.
    cfg.alpn_protocols.clear();
    let resolver = move |uri: &http::Uri| {
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let host = match names.lookup(authority) {
            Some(h) => h,
            None => {
                let h = uri.host().unwrap_or_default();
                h.strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(h)
                    .to_string()
            }
        };
        rustls::pki_types::ServerName::try_from(host)
    };
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_or_http()
        .with_server_name_resolver(resolver)
        .enable_http1()
        .wrap_connector(http_connector(connect_timeout)))
}

#[cfg(not(feature = "tls"))]
pub(crate) fn connector(
    connect_timeout: Duration,
    _names: ServerNames,
) -> Result<Connector, crate::Error> {
    Ok(http_connector(connect_timeout))
}

/// Read a body of known length whole. Stops as soon as the announced length arrived, without
/// waiting for hyper's connection task to signal the end (`collect` would: one more task switch
/// on the request's path). One chunk is returned as it is, without a copy.
#[cfg(any(feature = "aws", feature = "reqwest"))]
pub(crate) async fn read_whole<B>(mut body: B) -> Result<bytes::Bytes, B::Error>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let mut first: Option<bytes::Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else {
            break;
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        match &first {
            None => first = Some(data),
            Some(f) => {
                if rest.is_empty() {
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(match first {
        Some(_) if !rest.is_empty() => bytes::Bytes::from(rest),
        Some(f) => f,
        None => bytes::Bytes::new(),
    })
}
