//! Random numbers for picks, jitter and backoff, without touching the caller's thread state.
//!
//! A pick runs on the caller's thread, which may be a C or Go thread that the Rust runtime never
//! saw. A generator that seeds itself from `std::thread::current()` (as `fastrand`'s global one
//! does) makes the standard library cache a thread handle in a thread-local of that thread; for
//! the process's main thread nothing frees it before exit, and leak checkers such as valgrind
//! report it. So the engine keeps its own generator: one `u64` of state per thread in a
//! const-initialised thread-local (no allocation, no destructor), seeded on first use from a
//! process-wide counter and the clock, advanced with wyrand. Not cryptographic; it only spreads
//! load and jitters timers.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// This thread's generator state; 0 until the first draw seeds it.
    static STATE: Cell<u64> = const { Cell::new(0) };
}

/// Hands every thread a different seed, even when the clock reads the same.
static SEEDS: AtomicU64 = AtomicU64::new(0);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's finaliser: spreads the bits of consecutive inputs over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seed() -> u64 {
    let n = SEEDS.fetch_add(GOLDEN, Ordering::Relaxed);
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let t = (ts.tv_sec as u64) ^ (ts.tv_nsec as u64).rotate_left(32);
    // Never 0, which means "not seeded yet".
    mix(n ^ mix(t)) | 1
}

/// One step of wyrand over `state`: returns the new state and the output.
fn step(state: u64) -> (u64, u64) {
    let s = state.wrapping_add(0xA076_1D64_78BD_642F);
    let t = u128::from(s) * u128::from(s ^ 0xE703_7ED1_A0B4_28DB);
    (s, (t as u64) ^ ((t >> 64) as u64))
}

/// A uniformly random `u64`.
pub(crate) fn u64() -> u64 {
    STATE.with(|cell| {
        let mut s = cell.get();
        if s == 0 {
            s = seed();
        }
        let (next, out) = step(s);
        // The state after a step is never 0 in practice; keep it non-zero regardless.
        cell.set(next | u64::from(next == 0));
        out
    })
}

/// Uniform in `0..n` (0 when `n` is 0). Multiply-shift: the bias is below `n / 2^64`.
#[inline]
pub(crate) fn below(n: usize) -> usize {
    ((u128::from(u64()) * n as u128) >> 64) as usize
}

/// Two distinct indices uniform in `0..n` and a fair coin, from one draw when `n` fits in 32
/// bits (each index by multiply-shift on its own half of the word, the coin from the lowest
/// bit, which moves an index by at most one step of `2^32 / n`: the dependence is below
/// `n / 2^32`). For `n < 2` both indices are 0.
#[inline]
pub(crate) fn two_below(n: usize) -> (usize, usize, bool) {
    if n < 2 {
        return (0, 0, bool());
    }
    let (a, b, coin) = match u32::try_from(n) {
        Ok(n32) => {
            let r = u64();
            let half = |x: u64, m: u32| ((x & 0xFFFF_FFFF) * u64::from(m)) >> 32;
            (
                half(r, n32) as usize,
                half(r >> 32, n32 - 1) as usize,
                r & 1 == 1,
            )
        }
        Err(_) => (below(n), below(n - 1), bool()),
    };
    // `b` is drawn among the n - 1 others: skip over `a`.
    (a, if b >= a { b + 1 } else { b }, coin)
}

/// Uniform in `[0, 1)`.
#[inline]
pub(crate) fn f64() -> f64 {
    (u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A fair coin.
#[inline]
pub(crate) fn bool() -> bool {
    u64() & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut seen = [0u32; 7];
        for _ in 0..7_000 {
            let i = below(7);
            assert!(i < 7);
            seen[i] += 1;
        }
        // Each value expected 1000 times; 600 is more than 12 standard deviations away.
        assert!(seen.iter().all(|&c| c > 600), "{seen:?}");
        assert_eq!(below(0), 0);
        assert_eq!(below(1), 0);
    }

    #[test]
    fn two_below_draws_distinct_pairs_covering_every_index() {
        for n in [2usize, 3, 4, 1024] {
            let mut seen = vec![0u32; n];
            let mut heads = 0u32;
            let draws = 2_000 * n as u32;
            for _ in 0..draws {
                let (a, b, coin) = two_below(n);
                assert!(a < n && b < n && a != b, "n {n}: {a} {b}");
                seen[a] += 1;
                seen[b] += 1;
                heads += u32::from(coin);
            }
            // Each index expected 4000 times; 3000 is over 15 standard deviations away.
            assert!(seen.iter().all(|&c| c > 3_000), "n {n}: {seen:?}");
            assert!(
                (draws * 4 / 10..draws * 6 / 10).contains(&heads),
                "n {n}: {heads}"
            );
        }
        assert_eq!(two_below(1).0, 0);
        assert_eq!(two_below(0).1, 0);
    }

    #[test]
    fn f64_is_in_the_unit_interval() {
        let mut lo = false;
        let mut hi = false;
        for _ in 0..10_000 {
            let x = f64();
            assert!((0.0..1.0).contains(&x), "{x}");
            lo |= x < 0.1;
            hi |= x > 0.9;
        }
        assert!(lo && hi);
    }

    #[test]
    fn coin_lands_both_ways() {
        let heads = (0..1_000).filter(|_| bool()).count();
        assert!((300..700).contains(&heads), "{heads}");
    }

    #[test]
    fn threads_get_different_streams() {
        let a = std::thread::spawn(|| (0..4).map(|_| u64()).collect::<Vec<_>>());
        let b = std::thread::spawn(|| (0..4).map(|_| u64()).collect::<Vec<_>>());
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert_ne!(a, b);
    }
}
