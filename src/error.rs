//! The one error type of the crate.
//!
//! `Error` is opaque on purpose: callers branch on predicates (`is_no_endpoint()`, `is_connect()`,
//! ...) instead of matching an enum whose variants would freeze the failure model. The cause, when
//! there is one, is reachable through [`std::error::Error::source`].

use std::fmt;

/// A boxed error, as used at service boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The first error of type `E` in `err`'s chain of sources (`err` itself included).
#[cfg(any(feature = "aws", feature = "reqwest"))]
pub(crate) fn find_source<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut cur = Some(err);
    // Bounded by the chain's length: each step follows one `source`.
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// Everything that can go wrong in sidekick: bad configuration, no endpoint to send to, or a
/// request that failed on every endpoint it was allowed to try.
pub struct Error {
    kind: Kind,
    endpoint: Option<String>,
    source: Option<BoxError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Bad configuration; the string names the bad part and why.
    Config(String),
    /// No endpoint of any site is available.
    NoEndpoint,
    /// The connection to the endpoint could not be established (nothing was sent).
    Connect,
    /// The attempt timed out waiting for the response head.
    Timeout,
    /// The request failed after it was (possibly) sent.
    Request,
    /// The request body could not be read or buffered.
    Body,
    /// `ready()` gave up before any endpoint became available.
    NotReady,
    /// A membership change was refused; the string names the endpoint or site and why.
    Membership(String),
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Error {
            kind,
            endpoint: None,
            source: None,
        }
    }

    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Error::new(Kind::Config(msg.into()))
    }

    pub(crate) fn membership(msg: impl Into<String>) -> Self {
        Error::new(Kind::Membership(msg.into()))
    }

    pub(crate) fn no_endpoint() -> Self {
        Error::new(Kind::NoEndpoint)
    }

    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// True when the configuration (a site, an option, a builder value) was rejected.
    /// The message names the bad part.
    pub fn is_config(&self) -> bool {
        matches!(self.kind, Kind::Config(_))
    }

    /// True when no endpoint of any site was available, so nothing was sent.
    pub fn is_no_endpoint(&self) -> bool {
        matches!(self.kind, Kind::NoEndpoint)
    }

    /// True when the last attempt failed to connect (refused, unreachable, TLS handshake, connect
    /// timeout): the request never reached a backend.
    pub fn is_connect(&self) -> bool {
        matches!(self.kind, Kind::Connect)
    }

    /// True when the last attempt timed out waiting for the response.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::Timeout)
    }

    /// True when the request failed after it may have reached a backend.
    pub fn is_request(&self) -> bool {
        matches!(self.kind, Kind::Request)
    }

    /// True when the request body could not be read.
    pub fn is_body(&self) -> bool {
        matches!(self.kind, Kind::Body)
    }

    /// True when a membership change (see [`membership`](crate::membership)) was refused: an
    /// unknown endpoint or site, a duplicate, a mixed scheme, or a change that would leave a
    /// site or the balancer empty. The message names it; nothing was changed.
    pub fn is_membership(&self) -> bool {
        matches!(self.kind, Kind::Membership(_))
    }

    /// True when waiting for readiness timed out.
    pub fn is_not_ready(&self) -> bool {
        matches!(self.kind, Kind::NotReady)
    }

    /// The endpoint (URL text) the failing attempt went to, when there was one.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    pub(crate) fn kind(&self) -> &Kind {
        &self.kind
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("sidekick::Error");
        d.field("kind", &self.kind);
        if let Some(e) = &self.endpoint {
            d.field("endpoint", e);
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Config(msg) => write!(f, "invalid configuration: {msg}")?,
            Kind::NoEndpoint => f.write_str("no endpoint available in any site")?,
            Kind::Connect => f.write_str("could not connect to endpoint")?,
            Kind::Timeout => f.write_str("request timed out")?,
            Kind::Request => f.write_str("request failed")?,
            Kind::Body => f.write_str("request body could not be read")?,
            Kind::NotReady => f.write_str("no endpoint became available in time")?,
            Kind::Membership(msg) => write!(f, "membership change refused: {msg}")?,
        }
        if let Some(e) = &self.endpoint {
            write!(f, " ({e})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<crate::target::SiteError> for Error {
    fn from(e: crate::target::SiteError) -> Self {
        Error::config(e.to_string()).with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_match_kind() {
        assert!(Error::no_endpoint().is_no_endpoint());
        assert!(!Error::no_endpoint().is_config());
        let e = Error::config("health interval must be > 0");
        assert!(e.is_config());
        assert!(e.to_string().contains("health interval"));
        let e = Error::new(Kind::Connect).with_endpoint("http://127.0.0.1:1");
        assert!(e.is_connect());
        assert_eq!(e.endpoint(), Some("http://127.0.0.1:1"));
        assert!(e.to_string().contains("127.0.0.1:1"));
        let e = Error::membership("endpoint http://h:1 is in no site");
        assert!(e.is_membership() && !e.is_config());
        assert!(e.to_string().contains("http://h:1"), "{e}");
    }

    #[test]
    fn error_is_send_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
    }
}
