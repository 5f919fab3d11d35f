//! Go durations: parsing never panics; an accepted duration is at most `i64::MAX` ns in size;
//! it prints the way Go prints it and that text parses back to the same value; writing a
//! minus sign in front negates it.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sidekick::fuzzing::{parse_go_duration, print_go_duration};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ns) = parse_go_duration(text) else {
        return;
    };
    assert!(ns.unsigned_abs() <= i64::MAX as u128, "{text:?} -> {ns}");
    let magnitude = Duration::from_nanos(ns.unsigned_abs() as u64);
    let printed = print_go_duration(magnitude);
    assert_eq!(
        parse_go_duration(&printed),
        Ok(ns.abs()),
        "{text:?} -> {ns} ns printed as {printed:?}"
    );
    if !text.starts_with(['-', '+']) {
        assert_eq!(parse_go_duration(&format!("-{text}")), Ok(-ns), "-{text:?}");
        assert_eq!(parse_go_duration(&format!("+{text}")), Ok(ns), "+{text:?}");
    }
});
