//! How an attempt ended ([`Outcome`]), and what that says to the load score and the ejection
//! rules.
//!
//! The caller reports an outcome; `Classes` turns it into a `Signal` for the endpoint's
//! `Standing` and a failed-or-not for its load score, once, with
//! the status sets of the configuration.

use crate::failover::Signal;

/// How a request sent to a leased endpoint ended, reported with [`Lease::finish`](crate::Lease::finish).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It worked (a response the caller is happy with).
    Success,
    /// A response arrived with this status; the balancer classifies it (5xx and 429 count as
    /// failures for the load score, the `eject_statuses` set can eject).
    Status(u16),
    /// The connection could not be established: nothing was sent. Ejects the endpoint.
    Connect,
    /// The connection broke after the request was sent, before a response. Ejects the endpoint.
    Reset,
    /// No response within the caller's deadline. Ejects the endpoint.
    Timeout,
    /// The request failed for a reason that says nothing about the connection (counts as a
    /// failure in the load score; does not eject).
    Failed,
    /// The caller gave up for its own reasons; nothing is learnt about the endpoint.
    Cancelled,
}

/// A set of HTTP statuses, tested in O(1) on the request path.
#[derive(Clone, Debug, Default)]
pub(crate) struct StatusSet([u64; 10]);

impl StatusSet {
    pub(crate) fn new(statuses: &[u16]) -> Self {
        let mut set = StatusSet::default();
        for &s in statuses {
            if let Some(w) = set.0.get_mut(usize::from(s) / 64) {
                *w |= 1 << (s % 64);
            }
        }
        set
    }

    #[inline]
    pub(crate) fn contains(&self, s: u16) -> bool {
        self.0
            .get(usize::from(s) / 64)
            .is_some_and(|w| w & (1 << (s % 64)) != 0)
    }
}

/// The status sets that classify outcomes: failures (load score) and ejecting statuses.
#[derive(Clone, Debug, Default)]
pub(crate) struct Classes {
    /// Statuses that count as failures in the load score and the statistics.
    pub(crate) failure: StatusSet,
    /// Statuses that count toward passive ejection.
    pub(crate) eject: StatusSet,
}

impl Classes {
    /// What `outcome` says to the ejection rules (`failed` inside is the load score's view).
    #[inline]
    pub(crate) fn signal(&self, outcome: Outcome) -> Signal {
        match outcome {
            Outcome::Cancelled => Signal::Cancelled,
            Outcome::Success => Signal::Plain { failed: false },
            Outcome::Failed => Signal::Plain { failed: true },
            Outcome::Status(s) => Signal::Status {
                failed: self.failure.contains(s),
                ejecting: self.eject.contains(s),
            },
            Outcome::Connect | Outcome::Reset => {
                Signal::Broken(crate::failover::EjectReason::Connect)
            }
            Outcome::Timeout => Signal::Broken(crate::failover::EjectReason::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::EjectReason;

    #[test]
    fn status_sets_hold_what_they_were_given() {
        let s = StatusSet::new(&[200, 429, 500, 599]);
        for x in [200, 429, 500, 599] {
            assert!(s.contains(x), "{x}");
        }
        for x in [0, 201, 499, 600, 999, u16::MAX] {
            assert!(!s.contains(x), "{x}");
        }
    }

    #[test]
    fn outcomes_become_signals() {
        let c = Classes {
            failure: StatusSet::new(&[500, 503]),
            eject: StatusSet::new(&[503]),
        };
        assert_eq!(c.signal(Outcome::Cancelled), Signal::Cancelled);
        assert_eq!(c.signal(Outcome::Success), Signal::Plain { failed: false });
        assert_eq!(c.signal(Outcome::Failed), Signal::Plain { failed: true });
        assert_eq!(
            c.signal(Outcome::Status(500)),
            Signal::Status {
                failed: true,
                ejecting: false
            }
        );
        assert_eq!(
            c.signal(Outcome::Status(503)),
            Signal::Status {
                failed: true,
                ejecting: true
            }
        );
        assert_eq!(
            c.signal(Outcome::Status(200)),
            Signal::Status {
                failed: false,
                ejecting: false
            }
        );
        assert_eq!(
            c.signal(Outcome::Reset),
            Signal::Broken(EjectReason::Connect)
        );
        assert_eq!(
            c.signal(Outcome::Timeout),
            Signal::Broken(EjectReason::Timeout)
        );
    }
}
