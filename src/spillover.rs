//! Which site a pick goes to: sidekick's all-or-nothing failover, or graded spill-over.
//!
//! Sites are ordered tiers. By default all traffic goes to the first site that has an available
//! endpoint, which is sidekick's behaviour and stays the default: a second site is typically a
//! replica in another zone, used only while the first one is down. Its weak spot is a site that
//! is *almost* down: a site of four backends with one survivor still takes all the traffic, and
//! the survivor, sized for a quarter of it, is flooded.
//!
//! Graded spill-over (opt-in, `Builder::site_spillover`) is the arithmetic of Envoy's priority
//! levels, so that its behaviour is already familiar to operators:
//!
//! - a site's **health** is its available endpoints ÷ its endpoints × the *overprovisioning*
//!   factor (1.4 by default), capped at 1: a site keeps all its traffic while at least
//!   1 / 1.4 ≈ 72 % of it is available;
//! - the first site gets its health as its share, the next site its health of what is left, and
//!   so on; a remainder that no site covers goes back to them in proportion (when the healths
//!   add up to less than 1, each share is the site's health ÷ their sum);
//! - a pick draws a site by these shares (one uniform number), then an endpoint within that site
//!   by the site's policy; when the drawn site has no endpoint left to give (all excluded by a
//!   retry, say), the pick falls back to the sites in order.
//!
//! So a site of 4 down to 1 healthy keeps 0.25 × 1.4 = 35 % and spills 65 % to the next site.
//! Computing the shares reads each site's available list once (no lock, no allocation): a pick
//! costs O(sites), and deployments have a handful of sites.

/// A site's health: its share of available endpoints × `overprovisioning`, within 0 and 1.
/// A site without endpoints has none.
pub(crate) fn health(available: usize, endpoints: usize, overprovisioning: f64) -> f64 {
    if endpoints == 0 {
        return 0.0;
    }
    (available as f64 / endpoints as f64 * overprovisioning).clamp(0.0, 1.0)
}

/// Walk the sites' shares, given their healths in order: calls `visit(site, share)` for each
/// site with a share, in order, until it returns true. Returns whether some site has a share
/// (false when every health is 0: nothing is available).
fn walk(
    healths: impl Iterator<Item = f64> + Clone,
    mut visit: impl FnMut(usize, f64) -> bool,
) -> bool {
    let total: f64 = healths.clone().sum();
    if total <= 0.0 {
        return false;
    }
    // Under 100 % in all, shares are the healths scaled up to add up to 1.
    let scale = 1.0 / total.min(1.0);
    let mut left = 1.0f64;
    for (i, h) in healths.enumerate() {
        if left <= 0.0 {
            break;
        }
        let share = (h * scale).min(left);
        if share > 0.0 {
            if visit(i, share) {
                break;
            }
            left -= share;
        }
    }
    true
}

/// The site a pick goes to, given the sites' healths in order and `u` uniform in `[0, 1)`;
/// `None` when no site has any health.
pub(crate) fn draw(healths: impl Iterator<Item = f64> + Clone, u: f64) -> Option<usize> {
    let mut rest = u;
    let mut chosen = None;
    let any = walk(healths, |i, share| {
        // The last site with a share takes what rounding leaves over.
        chosen = Some(i);
        if rest < share {
            return true;
        }
        rest -= share;
        false
    });
    if any {
        chosen
    } else {
        None
    }
}

/// Every site's share of picks, in order, given their healths (all 0 when none has any).
pub(crate) fn shares(healths: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; healths.len()];
    walk(healths.iter().copied(), |i, share| {
        out[i] = share;
        false
    });
    out
}

/// The share of picks of each site under all-or-nothing failover: everything to the first site
/// with an available endpoint.
pub(crate) fn all_or_nothing(available: impl Iterator<Item = usize>) -> Vec<f64> {
    let mut taken = false;
    available
        .map(|n| {
            if n > 0 && !taken {
                taken = true;
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// Shares as whole percentages (what events carry: a change of a fraction of a percent is
/// not news).
pub(crate) fn percent(shares: &[f64]) -> Vec<u32> {
    shares
        .iter()
        .map(|s| (s * 100.0).round().clamp(0.0, 100.0) as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn health_is_the_available_share_times_the_factor_capped() {
        assert_eq!(health(4, 4, 1.4), 1.0);
        assert_eq!(health(3, 4, 1.4), 1.0);
        assert!((health(2, 4, 1.4) - 0.7).abs() < 1e-9);
        assert!((health(1, 4, 1.4) - 0.35).abs() < 1e-9);
        assert_eq!(health(0, 4, 1.4), 0.0);
        assert_eq!(health(0, 0, 1.4), 0.0);
    }

    #[test]
    fn shares_follow_envoys_priority_levels() {
        // Healthy first site: everything stays there.
        assert!(close(&shares(&[1.0, 1.0]), &[1.0, 0.0]));
        // 1 of 4 left: 35 % stays, 65 % spills.
        assert!(close(&shares(&[0.35, 1.0]), &[0.35, 0.65]));
        // Three sites, the second one degraded too: it takes its health of what is left.
        assert!(close(&shares(&[0.35, 0.7, 1.0]), &[0.35, 0.65, 0.0]));
        assert!(close(&shares(&[0.2, 0.5, 1.0]), &[0.2, 0.5, 0.3]));
        // Healths below 100 % in all: scaled up to add up to 1.
        assert!(close(&shares(&[0.2, 0.3]), &[0.4, 0.6]));
        // Nothing anywhere.
        assert!(close(&shares(&[0.0, 0.0]), &[0.0, 0.0]));
        assert!(close(&shares(&[0.0, 0.7]), &[0.0, 1.0]));
        for h in [[0.35, 1.0, 1.0], [0.1, 0.1, 0.1], [1.0, 0.0, 0.4]] {
            let total: f64 = shares(&h).iter().sum();
            assert!((total - 1.0).abs() < 1e-9, "{h:?}");
        }
    }

    #[test]
    fn draws_follow_the_shares() {
        let h = [0.35, 1.0];
        let mut counts = [0u32; 2];
        for k in 0..10_000 {
            let u = (f64::from(k) + 0.5) / 10_000.0;
            counts[draw(h.iter().copied(), u).expect("some site")] += 1;
        }
        assert_eq!(counts, [3_500, 6_500]);
        assert_eq!(draw([0.0, 0.0].into_iter(), 0.3), None);
        // u at the very top still lands on the last site with a share.
        assert_eq!(draw([1.0, 0.0].into_iter(), 0.999_999_999), Some(0));
        assert_eq!(draw([0.5, 0.0].into_iter(), 0.999_999_999), Some(0));
    }

    #[test]
    fn all_or_nothing_sends_everything_to_the_first_available_site() {
        assert_eq!(all_or_nothing([0, 3, 2].into_iter()), vec![0.0, 1.0, 0.0]);
        assert_eq!(all_or_nothing([0, 0].into_iter()), vec![0.0, 0.0]);
        assert_eq!(percent(&[0.354, 0.646]), vec![35, 65]);
    }
}
