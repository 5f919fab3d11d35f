//! The one classifier: what a transport error says about the attempt that failed.
//!
//! Every integration (the tower layer, the aws connector, the reqwest middleware, the sidecar)
//! hands its error to [`classify`] and reports the [`Outcome`] it returns, so a given failure
//! ejects, retries or gives up the same way whichever client saw it.
//!
//! First, a [`crate::Error`] of the body kind anywhere in the chain (the caller's own request
//! body failed: malformed, cut short, too slow; the sidecar's request body reports its errors
//! so) is [`Outcome::Cancelled`]: nothing is learnt about the endpoint, and a client must not be
//! able to eject a backend or raise its load score with broken uploads. Otherwise the cause
//! chain is read from the outermost error inward; the first error that settles the question
//! wins:
//!
//! | error in the chain                                   | outcome             |
//! |------------------------------------------------------|---------------------|
//! | hyper-util's client error with `is_connect()`        | `Connect`           |
//! | reqwest's error with `is_connect()` / `is_timeout()` | `Connect` / `Timeout` |
//! | [`crate::Error`] that is a connect / timeout error   | `Connect` / `Timeout` |
//! | tokio's `Elapsed`                                    | `Timeout`           |
//! | `hyper::Error`: a timeout                            | `Timeout`           |
//! | `hyper::Error`: a user error (the caller's body, …)  | `Failed`            |
//! | `hyper::Error`: incomplete message, closed, canceled | `Reset`             |
//! | `io::Error` refused, address not available, not connected | `Connect`      |
//! | `io::Error` timed out                                | `Timeout`           |
//! | any other `io::Error`                                | `Reset`             |
//! | nothing above, but a `hyper::Error` was seen         | `Reset`             |
//! | nothing above                                        | `Failed`            |
//!
//! # An unknown hyper error is a reset
//!
//! Before this module, the tower layer called a hyper error it could not read (a malformed
//! response head, a protocol error) a reset, and the aws connector and the reqwest middleware
//! called it a failure. It is settled as a **reset**: hyper only reports such errors for an
//! exchange with the endpoint that went wrong after the request was written, which is what a
//! reset means to the balancer (the endpoint misbehaved; an idempotent, replayable request may
//! go to another one). A hyper *user* error (the caller's own body failed, a bad header) says
//! nothing about the endpoint: `Failed`, never retried. Likewise an I/O error of a kind not
//! listed is a reset: the tower layer used to return it as a failure, the aws connector as a
//! reset.

use crate::balancer::Outcome;
use crate::error::{Error, Kind};

/// What the error `err` of one attempt says: [`Outcome::Connect`] (nothing was sent),
/// [`Outcome::Timeout`], [`Outcome::Reset`] (sent, then the exchange broke),
/// [`Outcome::Failed`] (nothing learnt about the endpoint) or [`Outcome::Cancelled`] (the
/// caller's own request body failed). Never another variant.
///
/// The rules: an error of the caller's request body anywhere in the chain is `Cancelled`;
/// otherwise the first error of the cause chain, outermost first, that settles it decides: a
/// connect error (hyper-util's or reqwest's `is_connect()`, a connect [`Error`], an `io::Error`
/// refused, address not available or not connected) is `Connect`; a timeout (reqwest's, a
/// timeout [`Error`], tokio's `Elapsed`, hyper's, an `io::Error` timed out) is `Timeout`; a hyper
/// user error is `Failed`; any other hyper error or `io::Error` is `Reset`; nothing recognised is
/// `Failed`.
pub fn classify(err: &(dyn std::error::Error + 'static)) -> Outcome {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    // Bounded by the chain's length: each step follows one `source`.
    while let Some(e) = cur {
        if e.downcast_ref::<Error>()
            .is_some_and(|e| matches!(e.kind(), Kind::Body))
        {
            return Outcome::Cancelled;
        }
        cur = e.source();
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut seen_hyper = false;
    // Bounded by the chain's length: each step follows one `source`.
    while let Some(e) = cur {
        if let Some(outcome) = settle(e, &mut seen_hyper) {
            return outcome;
        }
        cur = e.source();
    }
    if seen_hyper {
        Outcome::Reset
    } else {
        Outcome::Failed
    }
}

/// The outcome one error of the chain settles, if it settles one.
fn settle(e: &(dyn std::error::Error + 'static), seen_hyper: &mut bool) -> Option<Outcome> {
    if let Some(e) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
        if e.is_connect() {
            return Some(Outcome::Connect);
        }
        *seen_hyper = true;
    }
    #[cfg(feature = "reqwest")]
    if let Some(e) = e.downcast_ref::<reqwest::Error>() {
        if e.is_connect() {
            return Some(Outcome::Connect);
        }
        if e.is_timeout() {
            return Some(Outcome::Timeout);
        }
    }
    if let Some(e) = e.downcast_ref::<Error>() {
        match e.kind() {
            Kind::Connect => return Some(Outcome::Connect),
            Kind::Timeout => return Some(Outcome::Timeout),
            _ => {}
        }
    }
    if e.is::<tokio::time::error::Elapsed>() {
        return Some(Outcome::Timeout);
    }
    if let Some(h) = e.downcast_ref::<hyper::Error>() {
        if h.is_timeout() {
            return Some(Outcome::Timeout);
        }
        if h.is_user() {
            return Some(Outcome::Failed);
        }
        if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
            return Some(Outcome::Reset);
        }
        *seen_hyper = true;
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind as K;
        return Some(match io.kind() {
            K::ConnectionRefused | K::AddrNotAvailable | K::NotConnected => Outcome::Connect,
            K::TimedOut => Outcome::Timeout,
            _ => Outcome::Reset,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[derive(Debug)]
    struct Wrap(Box<dyn std::error::Error + Send + Sync>);

    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn io_kinds() {
        let of = |k: io::ErrorKind| classify(&io::Error::new(k, "x"));
        assert_eq!(of(io::ErrorKind::ConnectionRefused), Outcome::Connect);
        assert_eq!(of(io::ErrorKind::AddrNotAvailable), Outcome::Connect);
        assert_eq!(of(io::ErrorKind::TimedOut), Outcome::Timeout);
        assert_eq!(of(io::ErrorKind::ConnectionReset), Outcome::Reset);
        assert_eq!(of(io::ErrorKind::UnexpectedEof), Outcome::Reset);
        assert_eq!(of(io::ErrorKind::Other), Outcome::Reset);
    }

    #[test]
    fn our_errors_and_wrapped_ones() {
        assert_eq!(classify(&Error::new(Kind::Timeout)), Outcome::Timeout);
        assert_eq!(classify(&Error::new(Kind::Connect)), Outcome::Connect);
        assert_eq!(classify(&Error::new(Kind::Body)), Outcome::Cancelled);
        // The caller's body failing under the HTTP client's own wrapping.
        let body = Error::new(Kind::Body).with_source(io::Error::other("bad chunk"));
        assert_eq!(
            classify(&Wrap(Box::new(Error::new(Kind::Request).with_source(body)))),
            Outcome::Cancelled
        );
        let deep = Wrap(Box::new(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "no",
        )));
        assert_eq!(classify(&Wrap(Box::new(deep))), Outcome::Connect);
        let fmt = std::fmt::Error;
        assert_eq!(classify(&fmt), Outcome::Failed);
    }

    #[tokio::test]
    async fn elapsed_is_a_timeout() {
        let never = std::future::pending::<()>();
        let Err(elapsed) = tokio::time::timeout(std::time::Duration::from_millis(1), never).await
        else {
            unreachable!("a pending future cannot finish")
        };
        assert_eq!(classify(&elapsed), Outcome::Timeout);
    }
}
