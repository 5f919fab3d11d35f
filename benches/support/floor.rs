//! The floor of a balancing layer: the least any layer over the engine does per request —
//! pick an endpoint, point the request's URI at it, finish the lease when the response head
//! arrives — unboxed, without retries, head-wait bounds or anything else. Shared by
//! `benches/layer.rs` and `examples/layer_ir.rs` (included with `#[path]`), so that what the
//! floor costs over a bare client is measured beside what the real layer costs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::{Authority, Scheme};
use http::{Request, Response};
use hyper::body::Incoming;
use sidekick::{Balancer, EndpointId, Lease, Outcome};
use tower::Service;

/// Pick through the engine, point the URI at the endpoint, finish the lease on the head.
#[derive(Clone)]
pub struct Floor<S> {
    inner: S,
    balancer: Balancer,
    /// Every endpoint's scheme and authority, parsed once and shared by the clones (the layer
    /// keeps them parsed too).
    bases: Arc<Vec<(EndpointId, Scheme, Authority)>>,
}

impl<S> Floor<S> {
    /// `inner` behind the minimal use of `balancer`.
    pub fn new(balancer: Balancer, inner: S) -> Self {
        let bases = balancer
            .endpoints()
            .into_iter()
            .filter_map(|e| {
                let uri: http::Uri = e.url.parse().ok()?;
                Some((e.id, uri.scheme()?.clone(), uri.authority()?.clone()))
            })
            .collect();
        Floor {
            inner,
            balancer,
            bases: Arc::new(bases),
        }
    }

    /// The balancer.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// The scheme and authority of the lease's endpoint (parsed here for an endpoint that
    /// joined after `new`).
    fn base(&self, lease: &Lease) -> Option<(Scheme, Authority)> {
        if let Some((_, scheme, authority)) = self.bases.iter().find(|b| b.0 == lease.id()) {
            return Some((scheme.clone(), authority.clone()));
        }
        let target = lease.target();
        Some((
            target.scheme().parse().ok()?,
            target.authority().parse().ok()?,
        ))
    }
}

impl<S, B> Service<Request<B>> for Floor<S>
where
    S: Service<Request<B>, Response = Response<Incoming>>,
    S::Error: Into<sidekick::BoxError>,
{
    type Response = Response<Incoming>;
    type Error = sidekick::BoxError;
    type Future = FloorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let lease = match self.balancer.pick() {
            Ok(lease) => lease,
            Err(e) => {
                return FloorFuture::Failed {
                    error: Some(e.into()),
                }
            }
        };
        let Some((scheme, authority)) = self.base(&lease) else {
            lease.finish(Outcome::Failed);
            return FloorFuture::Failed {
                error: Some("the endpoint's URL does not parse".into()),
            };
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme);
        parts.authority = Some(authority);
        parts.path_and_query = req.uri().path_and_query().cloned();
        match http::Uri::from_parts(parts) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => {
                lease.finish(Outcome::Failed);
                return FloorFuture::Failed {
                    error: Some(e.into()),
                };
            }
        }
        FloorFuture::Sent {
            fut: self.inner.call(req),
            lease: Some(lease),
        }
    }
}

pin_project_lite::pin_project! {
    #[project = FloorProj]
    pub enum FloorFuture<F> {
        Sent { #[pin] fut: F, lease: Option<Lease> },
        Failed { error: Option<sidekick::BoxError> },
    }
}

impl<F, E> Future for FloorFuture<F>
where
    F: Future<Output = Result<Response<Incoming>, E>>,
    E: Into<sidekick::BoxError>,
{
    type Output = Result<Response<Incoming>, sidekick::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            FloorProj::Sent { fut, lease } => {
                let r = std::task::ready!(fut.poll(cx)).map_err(Into::into);
                if let Some(lease) = lease.take() {
                    lease.finish(match &r {
                        Ok(resp) if resp.status().is_server_error() => {
                            Outcome::Status(resp.status().as_u16())
                        }
                        Ok(_) => Outcome::Success,
                        Err(_) => Outcome::Failed,
                    });
                }
                Poll::Ready(r)
            }
            FloorProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "polled after its end".into()))),
        }
    }
}
