//! A ready-made balanced HTTP client: hyper-util's pooled HTTP/1.1 client, rustls, and the
//! [`SidekickLayer`](crate::service::SidekickLayer), built from one [`Builder`].

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::balancer::Balancer;
use crate::builder::Builder;
use crate::error::{BoxError, Error};
use crate::service::{RetryBody, Sidekick};
use crate::transport::{self, Connector};

type Inner = HyperClient<Connector, RetryBody<UnsyncBoxBody<Bytes, BoxError>>>;

/// An HTTP client that spreads its requests over a balancer's endpoints, with health probes,
/// ejection, site failover and retries on another endpoint. Cheap to clone.
///
/// Requests may carry a full URL (its scheme and authority are replaced by the chosen endpoint's,
/// the authority kept as `Host`) or only a path.
///
/// ```no_run
/// # async fn demo() -> Result<(), sidekick::Error> {
/// let client = sidekick::Client::builder()
///     .site("http://127.0.0.1:{9001...9004}")
///     .health_path("/health")
///     .build_client()?;
/// client.balancer().ready(std::time::Duration::from_secs(5)).await?;
/// let resp = client.get("/bucket/object").await?;
/// println!("{}", resp.status());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    svc: Sidekick<Inner>,
}

impl Client {
    /// The builder: all of the balancer's options, finished with [`Builder::build_client`].
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A client over an existing balancer.
    pub fn new(balancer: Balancer) -> Result<Client, Error> {
        let cfg = &balancer.core.cfg;
        let _guard = balancer.core.runtime.enter();
        #[cfg(feature = "tls")]
        let conn = transport::connector(
            cfg.connect_timeout,
            cfg.tls.clone(),
            balancer.core.names.clone(),
        )?;
        #[cfg(not(feature = "tls"))]
        let conn = transport::connector(cfg.connect_timeout, balancer.core.names.clone())?;
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .build(conn);
        Ok(Client {
            svc: Sidekick::new(balancer, inner),
        })
    }

    /// The balancer behind this client.
    pub fn balancer(&self) -> &Balancer {
        self.svc.balancer()
    }

    /// Send a request.
    pub async fn request<B>(&self, req: Request<B>) -> Result<Response<Incoming>, Error>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
        let mut svc = self.svc.clone();
        std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
        svc.call(req).await
    }

    /// Send a `GET` for a path (`/bucket/key?x=1`) or a full URL.
    pub async fn get(&self, uri: impl AsRef<str>) -> Result<Response<Incoming>, Error> {
        let req = Request::get(uri.as_ref())
            .body(Empty::<Bytes>::new())
            .map_err(|e| Error::config(format!("bad URI `{}`: {e}", uri.as_ref())))?;
        self.request(req).await
    }
}

impl Builder {
    /// Build the balancer and a [`Client`] over it.
    pub fn build_client(self) -> Result<Client, Error> {
        Client::new(self.build()?)
    }
}
