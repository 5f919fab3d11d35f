//! Passive ejection, its bound, and the way back.
//!
//! Active probes are slow to notice a dead backend (up to an interval plus jitter); the traffic
//! itself notices at once. So:
//!
//! - a **connection-level failure** (refused, reset before any response, connect or TLS timeout)
//!   ejects the endpoint immediately;
//! - a run of `eject_after` consecutive **failed responses** whose status is in the user's
//!   `eject_statuses` set ejects it too (the set is empty by default: an HTTP answer proves the
//!   backend is alive, and a `503 SlowDown` is load, not death).
//!
//! **Ejection is bounded.** Passive signals can lie — a client-side problem (file descriptors, a
//! local firewall) makes *every* backend look dead. The rule: within a site, passive ejection may
//! take out at most `max_ejected_share` (default 50 %) of the endpoints the probes say are up,
//! counted *after* the candidate ejection, and never the last one. An endpoint the rule keeps in
//! rotation still carries its failure penalty in the load score, so it receives little traffic.
//! Only active probes (or its own successes) can empty a site — and then traffic fails over to the
//! next site.
//!
//! **The way back.** With probes on, an ejected endpoint returns on its next passing probe. With
//! probes off it returns through a *single trial request* after a jittered exponential backoff
//! (`eject_backoff`, 1 s doubling to 60 s by default): exactly one request is let through; success
//! re-admits the endpoint, failure ejects it again with a doubled backoff.

use std::time::Duration;

/// Ejection settings (the builder's `eject_*` options).
#[derive(Clone, Debug)]
pub(crate) struct EjectConfig {
    pub(crate) statuses: Vec<u16>,
    pub(crate) after: u32,
    pub(crate) max_share: f64,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
}

impl Default for EjectConfig {
    fn default() -> Self {
        EjectConfig {
            statuses: Vec::new(),
            after: 5,
            max_share: 0.5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Why an endpoint was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EjectReason {
    /// The connection could not be established or broke before any response.
    Connect,
    /// The attempt timed out.
    Timeout,
    /// `eject_after` consecutive answers with a status in `eject_statuses`.
    Status,
}

impl EjectReason {
    /// A short, stable name (`connect`, `timeout`, `status`), for metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            EjectReason::Connect => "connect",
            EjectReason::Timeout => "timeout",
            EjectReason::Status => "status",
        }
    }
}

/// May one more endpoint of a site be ejected? `up` = endpoints the probes say are up (or all,
/// with probes off), `ejected` = those already ejected among them.
pub(crate) fn may_eject(up: usize, ejected: usize, max_share: f64) -> bool {
    if up == 0 {
        return false;
    }
    let after = ejected + 1;
    after < up && (after as f64) <= (up as f64) * max_share + 1e-9
}

/// Jittered exponential backoff before the trial request: `base × 2^(n-1)` capped at `max`, then
/// scaled by a factor uniform in `[0.5, 1.0)` so that many clients do not retry in step. `n` is the
/// number of ejections in a row (≥ 1); `u` is uniform in `[0, 1)`.
pub(crate) fn backoff(base: Duration, max: Duration, n: u32, u: f64) -> Duration {
    let exp = n.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exp).min(max);
    raw.mul_f64(0.5 + 0.5 * u.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_keeps_the_last_endpoint_and_the_share() {
        // 4 up: 1 and 2 may go (≤ 50 %), a third may not.
        assert!(may_eject(4, 0, 0.5));
        assert!(may_eject(4, 1, 0.5));
        assert!(!may_eject(4, 2, 0.5));
        // 2 up: one may go, the last never.
        assert!(may_eject(2, 0, 0.5));
        assert!(!may_eject(2, 1, 0.5));
        assert!(!may_eject(1, 0, 1.0));
        assert!(!may_eject(0, 0, 1.0));
        // share 1.0 still keeps one.
        assert!(may_eject(3, 1, 1.0));
        assert!(!may_eject(3, 2, 1.0));
        // share 0 ejects nothing.
        assert!(!may_eject(10, 0, 0.0));
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let b = Duration::from_secs(1);
        let m = Duration::from_secs(60);
        assert_eq!(backoff(b, m, 1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(b, m, 2, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(b, m, 3, 0.999_999).as_millis(), 3999);
        assert_eq!(backoff(b, m, 20, 0.0), Duration::from_secs(30));
        assert_eq!(backoff(b, m, u32::MAX, 0.0), Duration::from_secs(30));
        for n in 1..10 {
            let lo = backoff(b, m, n, 0.0);
            let hi = backoff(b, m, n, 0.999);
            assert!(lo <= hi && hi <= m);
        }
    }
}
