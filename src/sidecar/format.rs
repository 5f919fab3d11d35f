//! Text formats the sidecar shares with the Go sidekick: Go durations (parsed from flags, printed
//! in traces), IEC byte sizes, UTC clock times, and the escaping of JSON strings and XML text.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parse a duration in Go's syntax (`time.ParseDuration`): a sequence of decimal numbers, each
/// with an optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), with an optional
/// sign: `5s`, `1m30s`, `1.5h`, `500ms`. A bare `0` is allowed; any other number needs a unit.
///
/// Returns the signed number of nanoseconds, or a message saying what is wrong.
pub fn parse_go_duration(text: &str) -> Result<i128, String> {
    let invalid = || format!("invalid duration {text:?}");
    let (neg, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        // The number: digits, optionally a '.' and more digits; at least one digit overall.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(a) => {
                let n = a.bytes().take_while(u8::is_ascii_digit).count();
                a.split_at(n)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(i, _)| i);
        let (unit, next) = after.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("missing unit in duration {text:?}")),
            other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
        };
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| invalid())?
        };
        let mut value = int.checked_mul(scale).ok_or_else(invalid)?;
        // The fraction, digit by digit, exact to the nanosecond.
        let mut unit_frac = scale;
        for d in frac_part.bytes().take(18) {
            unit_frac /= 10;
            value += i128::from(d - b'0') * unit_frac;
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > i128::from(i64::MAX) {
            return Err(invalid());
        }
        rest = next;
    }
    Ok(if neg { -total } else { total })
}

/// Print a duration the way Go's `time.Duration.String()` does: `0s`, `850ns`, `1.5µs`,
/// `1.406ms`, `2.5s`, `1m30s`, `1h0m0s`.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    if ns < 1_000_000_000 {
        let (unit, scale) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("\u{b5}s", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        write_fraction(&mut out, ns, scale);
        out.push_str(unit);
        return out;
    }
    let secs_total = ns / 1_000_000_000;
    let h = secs_total / 3600;
    let m = (secs_total / 60) % 60;
    if h > 0 {
        let _ = write!(out, "{h}h{m}m");
    } else if m > 0 {
        let _ = write!(out, "{m}m");
    }
    let rem = ns % 60_000_000_000;
    write_fraction(&mut out, rem, 1_000_000_000);
    out.push('s');
    out
}

/// `value / scale` with the fraction's trailing zeros removed.
fn write_fraction(out: &mut String, value: u128, scale: u128) {
    let int = value / scale;
    let frac = value % scale;
    let _ = write!(out, "{int}");
    if frac != 0 {
        let width = scale.ilog10() as usize;
        let digits = format!("{frac:0width$}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

/// Round to the microsecond (how latencies are shown in traces and the table).
pub fn round_micros(d: Duration) -> Duration {
    let ns = d.as_nanos();
    let r = (ns + 500) / 1_000 * 1_000;
    Duration::from_nanos(u64::try_from(r).unwrap_or(u64::MAX))
}

/// A byte count in IEC units the way `humanize.IBytes` prints it: `0 B`, `500 B`, `1.0 KiB`,
/// `15 KiB`, `1.5 GiB`.
pub fn ibytes(n: u64) -> String {
    if n < 10 {
        return format!("{n} B");
    }
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut e = 0usize;
    let mut base = 1f64;
    while e + 1 < UNITS.len() && (n as f64) >= base * 1024.0 {
        base *= 1024.0;
        e += 1;
    }
    let val = ((n as f64) / base * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[e])
    } else {
        format!("{val:.0} {}", UNITS[e])
    }
}

/// English ordinal of a site number: `1st`, `2nd`, `3rd`, `4th`, `11th`, `21st`.
pub fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A UTC civil time, broken down from a [`SystemTime`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utc {
    /// Year.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
    /// Hours, minutes, seconds.
    pub hms: (u32, u32, u32),
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Utc {
    /// Break down a point in time (UTC, proleptic Gregorian calendar).
    pub fn from(t: SystemTime) -> Utc {
        let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let mut s = -(d.as_secs() as i64);
                let mut n = d.subsec_nanos();
                if n > 0 {
                    s -= 1;
                    n = 1_000_000_000 - n;
                }
                (s, n)
            }
        };
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        // Days to civil date (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Utc {
            year,
            month,
            day,
            hms: (sod / 3600, (sod / 60) % 60, sod % 60),
            nanos,
        }
    }

    /// `15:04:05.000` (Go layout), the clock time of traces and log lines.
    pub fn clock_millis(&self) -> String {
        let (h, m, s) = self.hms;
        format!("{h:02}:{m:02}:{s:02}.{:03}", self.nanos / 1_000_000)
    }

    /// RFC 3339 with nanoseconds, trailing zeros removed (Go's JSON encoding of a time):
    /// `2025-07-13T16:30:20.756123Z`.
    pub fn rfc3339_nano(&self) -> String {
        let (h, m, s) = self.hms;
        let mut out = format!(
            "{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}",
            self.year, self.month, self.day
        );
        if self.nanos != 0 {
            let digits = format!("{:09}", self.nanos);
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
        out.push('Z');
        out
    }
}

/// Append `s` to `out` as a JSON string literal (with quotes). `<`, `>` and `&` are left as they
/// are, like Go's encoder with HTML escaping off.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Escape text for an XML element's content.
pub fn xml_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let ok = [
            ("0", 0i128),
            ("5s", 5_000_000_000),
            ("500ms", 500_000_000),
            ("1m30s", 90_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("-2s", -2_000_000_000),
            ("+3ms", 3_000_000),
            ("10us", 10_000),
            ("10\u{b5}s", 10_000),
            ("10\u{3bc}s", 10_000),
            ("7ns", 7),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("1h2m3s4ms", 3_723_004_000_000),
            ("0.000000001s", 1),
        ];
        for (text, ns) in ok {
            assert_eq!(parse_go_duration(text), Ok(ns), "{text}");
        }
        for bad in [
            "",
            "5",
            "s",
            "-",
            ".s",
            "5x",
            "1.2.3s",
            "5 s",
            "9223372036854775808ns",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert!(parse_go_duration("5").unwrap_err().contains("missing unit"));
    }

    #[test]
    fn go_durations_print() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(850), "850ns"),
            (Duration::from_nanos(1_500), "1.5\u{b5}s"),
            (Duration::from_micros(1_406), "1.406ms"),
            (Duration::from_millis(2_500), "2.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(4_245), "4.245s"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_nanos(3_723_004_000_000), "1h2m3.004s"),
        ];
        for (d, text) in cases {
            assert_eq!(go_duration(d), text);
        }
        assert_eq!(
            round_micros(Duration::from_nanos(1_406_499)),
            Duration::from_micros(1_406)
        );
    }

    #[test]
    fn iec_bytes() {
        let cases = [
            (0, "0 B"),
            (9, "9 B"),
            (500, "500 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (15 * 1024, "15 KiB"),
            (1 << 20, "1.0 MiB"),
            (1 << 30, "1.0 GiB"),
        ];
        for (n, text) in cases {
            assert_eq!(ibytes(n), text, "{n}");
        }
    }

    #[test]
    fn ordinals() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111]
            .iter()
            .map(|&n| ordinal(n))
            .collect();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st",
                "111th"
            ]
        );
    }

    #[test]
    fn utc_breakdown() {
        let t = UNIX_EPOCH + Duration::new(1_752_424_220, 756_000_000);
        let u = Utc::from(t);
        assert_eq!((u.year, u.month, u.day), (2025, 7, 13));
        assert_eq!(u.clock_millis(), "16:30:20.756");
        assert_eq!(u.rfc3339_nano(), "2025-07-13T16:30:20.756Z");
        let leap = Utc::from(UNIX_EPOCH + Duration::from_secs(951_782_400)); // 2000-02-29
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
        assert_eq!(Utc::from(UNIX_EPOCH).rfc3339_nano(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn escaping() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\n<d>\u{1}");
        assert_eq!(s, r#""a\"b\\c\n<d>\u0001""#);
        assert_eq!(xml_text("a<b>&'\""), "a&lt;b&gt;&amp;&apos;&quot;");
    }
}
