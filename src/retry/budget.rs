//! The retry budget: how much retrying the whole balancer may do, shared by every caller.
//!
//! A sliding window of ten one-second slots, lock-free. Each request deposits one unit (when its
//! [`Attempts`](super::Attempts) starts); a retry that will load a backend withdraws one, while
//! `withdrawals < ratio × deposits + min_per_sec × 10` over the window.

use std::sync::atomic::{AtomicU64, Ordering};

const SLOTS: usize = 10;
const SLOT_NS: u64 = 1_000_000_000;

/// The budget over a sliding window of ten one-second slots, lock-free.
///
/// Each request deposits one unit; a retry may withdraw while
/// `withdrawals < ratio × deposits + min_per_sec × 10` over the window.
#[derive(Debug)]
pub(crate) struct Budget {
    ratio: f64,
    min_per_sec: u32,
    /// Per slot: the second it belongs to, deposits, withdrawals.
    epochs: [AtomicU64; SLOTS],
    deposits: [AtomicU64; SLOTS],
    withdrawals: [AtomicU64; SLOTS],
}

impl Budget {
    pub(crate) fn new(ratio: f64, min_per_sec: u32) -> Self {
        Budget {
            ratio: ratio.max(0.0),
            min_per_sec,
            epochs: Default::default(),
            deposits: Default::default(),
            withdrawals: Default::default(),
        }
    }

    fn slot(&self, now_ns: u64) -> usize {
        let sec = now_ns / SLOT_NS + 1; // +1 so that epoch 0 means "never used"
        let i = (sec as usize) % SLOTS;
        let seen = self.epochs[i].load(Ordering::Acquire);
        if seen != sec
            && self.epochs[i]
                .compare_exchange(seen, sec, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.deposits[i].store(0, Ordering::Release);
            self.withdrawals[i].store(0, Ordering::Release);
        }
        i
    }

    /// Count one request.
    pub(crate) fn deposit(&self, now_ns: u64) {
        let i = self.slot(now_ns);
        self.deposits[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Ask for one retry; true when the budget allows it (and then it is spent).
    pub(crate) fn withdraw(&self, now_ns: u64) -> bool {
        let cur = self.slot(now_ns);
        let sec = now_ns / SLOT_NS + 1;
        let (mut d, mut w) = (0u64, 0u64);
        for i in 0..SLOTS {
            let e = self.epochs[i].load(Ordering::Acquire);
            if e != 0 && e + (SLOTS as u64) > sec && e <= sec {
                d += self.deposits[i].load(Ordering::Relaxed);
                w += self.withdrawals[i].load(Ordering::Relaxed);
            }
        }
        let allowed = self.ratio * d as f64 + f64::from(self.min_per_sec) * SLOTS as f64;
        if (w as f64) < allowed {
            self.withdrawals[cur].fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn floor_allows_min_per_sec_times_window() {
        let b = Budget::new(0.0, 2);
        let granted = (0..100).filter(|_| b.withdraw(0)).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn ratio_tracks_deposits() {
        let b = Budget::new(0.2, 0);
        for _ in 0..100 {
            b.deposit(0);
        }
        let granted = (0..100).filter(|_| b.withdraw(S / 2)).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn window_forgets_old_traffic() {
        let b = Budget::new(0.5, 0);
        for _ in 0..100 {
            b.deposit(0);
        }
        assert!(b.withdraw(S));
        // 11 s later the deposits are out of the window.
        assert!(!b.withdraw(11 * S));
    }
}
