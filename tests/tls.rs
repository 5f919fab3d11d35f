//! HTTPS endpoints: a host name fanned out to its addresses still verifies the certificate
//! against the host name. Certificates are generated at test time.
#![cfg(all(feature = "client", feature = "tls"))]

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sidekick::Client;

const HOST: &str = "tls-backend.test";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS backend on 127.0.0.1:0 whose certificate names only `HOST`; aborted on drop.
struct TlsBackend {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_backend(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> TlsBackend {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        // Ends when the test drops the backend (the task is aborted with its connections).
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            conns.spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"tls-ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    TlsBackend { port, task }
}

fn client_tls(cert: &CertificateDer<'static>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn fanned_out_addresses_verify_against_the_host_name() {
    support::trace_init();
    let ck = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let be = tls_backend(cert.clone(), key).await;

    let c = Client::builder()
        .site(format!("https://{HOST}:{}", be.port))
        .rr_dns(true)
        .resolver(|_| async { Ok(vec!["127.0.0.1".parse::<IpAddr>().unwrap()]) })
        .health_path("/health")
        .health_interval(Duration::from_millis(200))
        .tls_config(client_tls(&cert))
        .build_client()
        .unwrap();
    c.balancer().ready(Duration::from_secs(5)).await.unwrap();
    let eps = c.balancer().endpoints();
    assert_eq!(eps.len(), 1);
    assert!(eps[0].url.starts_with("https://127.0.0.1:"), "{eps:?}");
    let resp = c.get("/obj").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "tls-ok"
    );

    // The same address without the host name fails verification: the name is what was checked.
    let c = Client::builder()
        .site(format!("https://127.0.0.1:{}", be.port))
        .health_check(false)
        .tls_config(client_tls(&cert))
        .build_client()
        .unwrap();
    let err = c.get("/obj").await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}
