//! SITE arguments: `parse_site` and `expand_pool` never panic; an accepted pool expands to
//! exactly the product of its range sizes (computed here independently), a product over the
//! limit is refused, every expansion is brace-free, and every accepted endpoint prints to a
//! text that parses back to the same endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidekick::fuzzing::{expand_pool, parse_site, Target};

/// The parser's documented limit on one pool's expansion.
const LIMIT: u128 = 1_000_000;
/// Pools larger than this are not expanded here (slow, and the limit is checked by size alone).
const CHEAP: u128 = 4_096;

/// Number of strings the `{N...M}` ranges of `pool` expand to, or `None` when the ranges are
/// not well-formed by the documented rules (decimal first, else lowercase hexadecimal).
fn product(pool: &str) -> Option<u128> {
    let mut total: u128 = 1;
    let mut rest = pool;
    while let Some(open) = rest.find('{') {
        if rest[..open].contains('}') {
            return None;
        }
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        let inner = &after[..close];
        let (a, b) = inner.split_once("...")?;
        let bound = |t: &str| -> Option<u64> {
            if t.is_empty()
                || !t
                    .bytes()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
            {
                return None;
            }
            t.parse::<u64>()
                .ok()
                .or_else(|| u64::from_str_radix(t, 16).ok())
        };
        let (a, b) = (bound(a)?, bound(b)?);
        if a > b {
            return None;
        }
        total = total.saturating_mul(u128::from(b - a) + 1);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return None;
    }
    Some(total)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut all_cheap = true;
    for pool in text.split(',') {
        match product(pool) {
            Some(n) if n > LIMIT => {
                assert!(expand_pool(pool).is_err(), "{n} > limit accepted: {pool:?}");
                all_cheap = false;
            }
            Some(n) if n <= CHEAP => {
                let out = expand_pool(pool)
                    .unwrap_or_else(|e| panic!("well-formed pool {pool:?} refused: {e}"));
                assert_eq!(out.len() as u128, n, "expansion count of {pool:?}");
                if n > 1 || pool.contains('{') {
                    for s in &out {
                        assert!(!s.contains(['{', '}']), "{s:?} from {pool:?}");
                    }
                } else {
                    assert_eq!(out, [pool.to_string()]);
                }
            }
            Some(_) => all_cheap = false,
            None => assert!(
                expand_pool(pool).is_err(),
                "malformed pool accepted: {pool:?}"
            ),
        }
    }
    if !all_cheap {
        return;
    }
    if let Ok(targets) = parse_site(text) {
        assert!(!targets.is_empty());
        for t in &targets {
            assert_eq!(t.is_https(), targets[0].is_https(), "one scheme per site");
            let again = Target::parse(t.as_str())
                .unwrap_or_else(|e| panic!("printed target {:?} refused: {e}", t.as_str()));
            assert_eq!(&again, t, "parse(print(t)) != t for {:?}", t.as_str());
            assert_eq!(parse_site(t.as_str()), Ok(vec![t.clone()]));
        }
    }
});
