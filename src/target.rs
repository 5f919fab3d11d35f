//! Backend addresses ([`Target`]) and the SITE notation that names them.
//!
//! The running state of a site (its endpoints, which of them are available) is
//! [`site`](crate::site)'s; this module only turns text into validated targets.
//!
//! # Why this module exists
//!
//! sidekick is configured with positional SITE arguments, and the notation is compact enough
//! that it deserves its own careful parser:
//!
//! * **One argument is one site.** Sites form ordered failover tiers: traffic goes to the first
//!   site that has a healthy backend, and only falls through to the next one when a whole site
//!   is down. This module handles a single argument; the caller numbers the sites.
//! * **Commas separate pools.** `http://a:9000,http://b:9000` is one site made of two pools.
//!   Pools are only a way of writing things down: all their endpoints are flattened, in order,
//!   into one backend list for the site. A comma where a space was meant (or the other way round)
//!   is a common mistake, so empty pools and whitespace inside endpoints are rejected loudly
//!   instead of being skipped.
//! * **Ellipsis ranges.** Inside a pool, `{N...M}` expands to every value from `N` to `M`
//!   inclusive, so `http://10.0.0.{1...4}:9000` names four servers. Bounds are decimal, or
//!   lowercase hexadecimal when a bound does not read as decimal (each bound is tried as decimal
//!   first, so in `{10...1a}` the start is ten and the sequence runs `a`..`1a`); a leading zero
//!   asks for zero-padding to the width of the end bound; several ranges in one pool form a
//!   Cartesian product in which the left-most range varies fastest. These rules match the MinIO ellipsis
//!   notation that existing sidekick command lines rely on, including its odd corners (the
//!   padding width always comes from the *end* bound). Expansions larger than one million
//!   endpoints are refused rather than exhausting memory.
//!
//! Every expanded endpoint is then validated up front: `http` or `https` only, a host that is a
//! valid RFC 1123 name or an IP literal, an optional port in 1..=65535, an optional base path,
//! no query and no fragment, and one scheme for the whole site. Failing at startup with a message
//! that names the offending text is far friendlier than a backend that silently never comes up.
//!
//! # Deliberate deviation from upstream
//!
//! Upstream only expands ellipses when *every* pool of a site contains one, so a site that mixes
//! a braced pool with a plain pool (`http://a:9000,http://b{1...2}:9000`) fails at startup with
//! a confusing URL error. Here each pool is expanded on its own, so mixing braced and plain pools
//! in one site simply works. Likewise, replacing a host by an IPv6 address (DNS fan-out, see
//! [`Target::with_host`]) puts the brackets the URI syntax requires around it, which upstream
//! forgets.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use url::{Host, Url};

/// Largest number of endpoints a single pool may expand to.
const MAX_EXPANSION: u128 = 1_000_000;

/// The reminder attached to every malformed-range error.
const RANGE_SYNTAX: &str = "a range must be written {N...M} (three dots) with N and M unsigned \
                            decimal or lowercase hexadecimal numbers";

/// Parse one SITE argument (comma-separated pools, each possibly with ellipsis ranges) into its
/// endpoints, in order: pool order, then expansion order. Duplicates are kept.
///
/// Pools may freely mix ellipsis ranges and plain endpoints. All endpoints of the site must use
/// the same scheme.
///
/// # Errors
///
/// Returns a [`SiteError`] naming the offending text when the argument is empty, a pool is empty
/// (stray, doubled or trailing comma), a range is malformed or too large, an endpoint is invalid
/// (see [`Target::parse`]) or the endpoints do not all share one scheme.
pub fn parse_site(arg: &str) -> Result<Vec<Target>, SiteError> {
    if arg.trim().is_empty() {
        return Err(SiteError::new(
            arg,
            "empty SITE argument: a site needs at least one endpoint such as http://10.0.0.1:9000",
        ));
    }
    let mut targets = Vec::new();
    for (index, pool) in arg.split(',').enumerate() {
        if pool.trim().is_empty() {
            return Err(SiteError::new(
                arg,
                format!(
                    "empty pool #{} (stray, doubled or trailing comma?); pools are separated by \
                     commas, sites by spaces",
                    index + 1
                ),
            ));
        }
        for endpoint in expand_pool(pool)? {
            targets.push(Target::parse(&endpoint)?);
        }
    }
    if let Some(first) = targets.first() {
        if let Some(other) = targets.iter().find(|t| t.https != first.https) {
            return Err(SiteError::new(
                other.as_str(),
                format!(
                    "scheme `{}` differs from scheme `{}` of `{}`; all endpoints of one site must \
                     use the same scheme",
                    other.scheme(),
                    first.scheme(),
                    first.as_str()
                ),
            ));
        }
    }
    Ok(targets)
}

/// Expand the ellipsis ranges of ONE pool string (no commas handled here) into plain strings.
/// A string without any range is returned as a single element, unchanged.
///
/// With several ranges the result is their Cartesian product, the left-most range varying
/// fastest: `h{1...2}.dc{1...3}` gives `h1.dc1, h2.dc1, h1.dc2, h2.dc2, h1.dc3, h2.dc3`.
///
/// # Errors
///
/// Returns a [`SiteError`] naming the pool when a brace is unbalanced or stray, a range is not
/// written `{N...M}`, a bound is empty, not a number or too large, a range starts after its end,
/// or the expansion would exceed one million strings.
pub fn expand_pool(pool: &str) -> Result<Vec<String>, SiteError> {
    let (literals, ranges) = split_ranges(pool)?;
    if ranges.is_empty() {
        return Ok(vec![pool.to_owned()]);
    }

    let mut total: Option<u128> = Some(1);
    for range in &ranges {
        total = total.and_then(|t| t.checked_mul(range.len()));
    }
    let total = match total {
        Some(t) if t <= MAX_EXPANSION => t,
        Some(t) => {
            return Err(SiteError::new(
                pool,
                format!("ranges expand to {t} endpoints, more than the limit of {MAX_EXPANSION}"),
            ))
        }
        None => {
            return Err(SiteError::new(
                pool,
                format!(
                    "ranges expand to more than {} endpoints, far more than the limit of \
                     {MAX_EXPANSION}",
                    u128::MAX
                ),
            ))
        }
    };

    let mut out = Vec::new();
    for index in 0..total {
        let mut text = String::with_capacity(pool.len() + 8 * ranges.len());
        let mut rest = index;
        for (literal, range) in literals.iter().zip(&ranges) {
            text.push_str(literal);
            let offset = rest % range.len();
            rest /= range.len();
            range.push_value(&mut text, range.start + offset);
        }
        if let Some(last) = literals.last() {
            text.push_str(last);
        }
        out.push(text);
    }
    Ok(out)
}

/// One `{N...M}` range of a pool.
#[derive(Debug, Clone, Copy)]
struct Range {
    start: u128,
    end: u128,
    hex: bool,
    /// Zero-padding width, 0 for none.
    width: usize,
}

impl Range {
    /// Number of values, at least 1 and at most 2^64.
    fn len(&self) -> u128 {
        self.end - self.start + 1
    }

    fn push_value(&self, out: &mut String, value: u128) {
        let width = self.width;
        let formatted = if self.hex {
            format!("{value:0width$x}")
        } else {
            format!("{value:0width$}")
        };
        out.push_str(&formatted);
    }
}

/// Split a pool into the literal text around its ranges (always one more literal than ranges)
/// and the parsed ranges themselves.
fn split_ranges(pool: &str) -> Result<(Vec<&str>, Vec<Range>), SiteError> {
    let mut literals = Vec::new();
    let mut ranges = Vec::new();
    let mut literal_start = 0;
    let mut pos = 0;
    while let Some(offset) = pool[pos..].find(['{', '}']) {
        let brace = pos + offset;
        if pool[brace..].starts_with('}') {
            return Err(SiteError::new(
                pool,
                format!("stray `}}` at byte {brace}; {RANGE_SYNTAX}"),
            ));
        }
        let inner_start = brace + 1;
        let Some(close) = pool[inner_start..].find('}') else {
            return Err(SiteError::new(
                pool,
                format!("unclosed `{{` at byte {brace}; {RANGE_SYNTAX}"),
            ));
        };
        let inner = &pool[inner_start..inner_start + close];
        if inner.contains('{') {
            return Err(SiteError::new(
                pool,
                format!("nested or unclosed `{{` at byte {brace}; {RANGE_SYNTAX}"),
            ));
        }
        literals.push(&pool[literal_start..brace]);
        ranges.push(parse_range(pool, inner)?);
        pos = inner_start + close + 1;
        literal_start = pos;
    }
    literals.push(&pool[literal_start..]);
    Ok((literals, ranges))
}

/// Parse the text between the braces of one range, e.g. `01...10`.
fn parse_range(pool: &str, inner: &str) -> Result<Range, SiteError> {
    let malformed = || {
        SiteError::new(
            pool,
            format!("`{{{inner}}}` is not a valid range; {RANGE_SYNTAX}"),
        )
    };
    let Some((start_text, end_text)) = inner.split_once("...") else {
        return Err(malformed());
    };
    let bound_chars = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    };
    if !bound_chars(start_text) || !bound_chars(end_text) {
        return Err(malformed());
    }
    if start_text.is_empty() || end_text.is_empty() {
        return Err(SiteError::new(
            pool,
            format!("empty bound in `{{{inner}}}`; {RANGE_SYNTAX}"),
        ));
    }
    let (start, start_hex) = parse_bound(pool, inner, start_text)?;
    let (end, end_hex) = parse_bound(pool, inner, end_text)?;
    if start > end {
        return Err(SiteError::new(
            pool,
            format!("range start {start_text} is bigger than end {end_text} in `{{{inner}}}`"),
        ));
    }
    let padded = (start_text.starts_with('0') && start_text.len() > 1) || end_text.starts_with('0');
    Ok(Range {
        start: u128::from(start),
        end: u128::from(end),
        hex: start_hex || end_hex,
        width: if padded { end_text.len() } else { 0 },
    })
}

/// Parse one non-empty bound made of `[0-9a-z]`: decimal first, then hexadecimal.
/// Returns the value and whether it was read as hexadecimal.
fn parse_bound(pool: &str, inner: &str, text: &str) -> Result<(u64, bool), SiteError> {
    if let Ok(value) = text.parse::<u64>() {
        return Ok((value, false));
    }
    if text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return match u64::from_str_radix(text, 16) {
            Ok(value) => Ok((value, true)),
            Err(_) => Err(SiteError::new(
                pool,
                format!("bound `{text}` in `{{{inner}}}` is too large"),
            )),
        };
    }
    Err(SiteError::new(
        pool,
        format!(
            "bound `{text}` in `{{{inner}}}` is neither decimal nor lowercase hexadecimal; \
             {RANGE_SYNTAX}"
        ),
    ))
}

/// One backend endpoint, validated.
///
/// Built by [`Target::parse`] (or [`parse_site`] for a whole SITE argument). The scheme is
/// `http` or `https`, the host is a valid host name or an IP literal, and the base path has no
/// trailing `/`. The base path and user information are not used for proxied requests; they
/// exist for health probes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Canonical text, see [`Target::as_str`].
    text: String,
    https: bool,
    /// Host without IPv6 brackets.
    host: String,
    port: u16,
    explicit_port: bool,
    authority: String,
    path: String,
    /// Percent-decoded `(user, password)`.
    userinfo: Option<(String, String)>,
    /// User information as it appears in the URL (percent-encoded), without the `@`.
    raw_userinfo: Option<String>,
}

impl Target {
    /// Parse and validate a single endpoint such as `http://10.0.0.1:9000` or
    /// `https://minio1:9000/base/`. Ellipsis ranges are not expanded here (see [`parse_site`]).
    ///
    /// Trailing `/` are trimmed. The scheme must be `http` or `https` (case-insensitive). A host
    /// is required: a host name whose dot-separated labels use only letters, digits and `-`
    /// (not at either end), an IPv4 address or a bracketed IPv6 address. An explicit port must
    /// be in 1..=65535. Query strings and fragments are refused.
    ///
    /// # Errors
    ///
    /// Returns a [`SiteError`] naming the endpoint and the broken rule.
    pub fn parse(s: &str) -> Result<Target, SiteError> {
        // Trim trailing `/`, but never into the `//` after the scheme (`http://` stays whole).
        let trimmed = match s.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}", rest.trim_end_matches('/')),
            None => s.trim_end_matches('/').to_owned(),
        };
        let trimmed = trimmed.as_str();
        let fail = |reason: String| SiteError::new(trimmed, reason);
        if trimmed.is_empty() {
            return Err(fail("empty endpoint".to_owned()));
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail(
                "endpoint contains whitespace or control characters; separate pools with \
                 commas and sites with spaces"
                    .to_owned(),
            ));
        }
        if trimmed.contains('\\') {
            return Err(fail(
                "backslashes are not allowed in an endpoint, use `/`".to_owned(),
            ));
        }
        if trimmed.contains(['{', '}']) {
            return Err(fail(
                "braces are only allowed in {N...M} ranges of a SITE argument, which a single \
                 endpoint does not expand"
                    .to_owned(),
            ));
        }

        let missing_scheme = || {
            let lower = trimmed.to_ascii_lowercase();
            let reason = if lower.starts_with("http:") || lower.starts_with("https:") {
                "missing scheme separator, write `://` right after http or https".to_owned()
            } else {
                let bare = trimmed.trim_start_matches(['/', ':']);
                format!("missing scheme, write http://{bare} or https://{bare}")
            };
            fail(reason)
        };
        let Some((scheme_text, rest)) = trimmed.split_once("://") else {
            return Err(missing_scheme());
        };
        let scheme_syntax = scheme_text.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphabetic() || (i > 0 && (b.is_ascii_digit() || b"+-.".contains(&b)))
        });
        if scheme_text.is_empty() || !scheme_syntax {
            return Err(missing_scheme());
        }
        let https = match scheme_text.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            other => {
                return Err(fail(format!(
                    "unsupported scheme `{other}`, only http and https are allowed"
                )))
            }
        };

        // Look at the authority as written: the url crate forgets whether a default port was
        // spelled out and quietly skips extra slashes (`http:///h` parses with host `h`).
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let raw_authority = &rest[..authority_end];
        let host_port = raw_authority
            .rsplit_once('@')
            .map_or(raw_authority, |(_, host_port)| host_port);
        let (raw_host, raw_port) = split_host_port(host_port);
        if raw_host.is_empty() {
            return Err(fail(missing_host()));
        }
        if raw_port == Some("") {
            return Err(fail(
                "empty port after `:`; give a port in 1..=65535 or leave out the `:`".to_owned(),
            ));
        }

        let url = Url::parse(trimmed).map_err(|e| {
            fail(match e {
                url::ParseError::EmptyHost => missing_host(),
                url::ParseError::InvalidPort => {
                    "invalid port, it must be a number in 1..=65535".to_owned()
                }
                other => format!("cannot parse as a URL: {other}"),
            })
        })?;
        if url.query().is_some() {
            return Err(fail(
                "query strings (`?...`) are not allowed in an endpoint".to_owned(),
            ));
        }
        if url.fragment().is_some() {
            return Err(fail(
                "fragments (`#...`) are not allowed in an endpoint".to_owned(),
            ));
        }

        let (host, ipv6) = match url.host() {
            None => return Err(fail(missing_host())),
            Some(Host::Domain(name)) => {
                if !valid_host_name(name) {
                    return Err(fail(format!(
                        "invalid host name `{name}`: each dot-separated label may contain only \
                         letters, digits and `-`, and must not start or end with `-` \
                         (underscores are not allowed)"
                    )));
                }
                (name.to_owned(), false)
            }
            Some(Host::Ipv4(addr)) => (addr.to_string(), false),
            Some(Host::Ipv6(addr)) => (addr.to_string(), true),
        };

        let default_port = if https { 443 } else { 80 };
        let port = url.port_or_known_default().unwrap_or(default_port);
        if port == 0 {
            return Err(fail(
                "invalid port 0, it must be a number in 1..=65535".to_owned(),
            ));
        }

        let (userinfo, raw_userinfo) = if url.username().is_empty() && url.password().is_none() {
            (None, None)
        } else {
            let user = percent_decode(url.username());
            let password = percent_decode(url.password().unwrap_or(""));
            let (Some(user), Some(password)) = (user, password) else {
                return Err(fail(
                    "user information is not valid UTF-8 once percent-decoded".to_owned(),
                ));
            };
            let raw = match url.password() {
                Some(pw) => format!("{}:{pw}", url.username()),
                None => url.username().to_owned(),
            };
            (Some((user, password)), Some(raw))
        };

        let path = url.path().trim_end_matches('/').to_owned();
        Ok(Target::assemble(Parts {
            https,
            host,
            ipv6,
            port,
            explicit_port: raw_port.is_some(),
            path,
            userinfo,
            raw_userinfo,
        }))
    }

    /// The endpoint text after trimming trailing `/`, e.g. `http://10.0.0.1:9000` or
    /// `https://minio1:9000/base`.
    ///
    /// Scheme and host name are lowercased; user information, when written, is included.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The scheme: `"http"` or `"https"`.
    pub fn scheme(&self) -> &str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The host without brackets: a lowercase host name, an IPv4 address, or an IPv6 address
    /// such as `::1`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The explicit port, else 80 for `http` and 443 for `https`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host and port as they must appear in a URI authority: IPv6 addresses get brackets
    /// (`[::1]:9000`), and the port is present only if it was written explicitly.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The base path without trailing `/` (e.g. `/base`), or `""` when there is none.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The percent-decoded `(user, password)` when written as `http://u:p@h`. The password is
    /// `""` when only a user was given.
    pub fn userinfo(&self) -> Option<(&str, &str)> {
        self.userinfo
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()))
    }

    /// The same target with its host replaced by `ip`, as used when fanning one host name out
    /// to all its resolved addresses. Scheme, port (and whether it was explicit), path and user
    /// information are kept; an IPv6 address is bracketed in [`as_str`](Target::as_str) and
    /// [`authority`](Target::authority).
    pub fn with_host(&self, ip: IpAddr) -> Target {
        Target::assemble(Parts {
            https: self.https,
            host: ip.to_string(),
            ipv6: ip.is_ipv6(),
            port: self.port,
            explicit_port: self.explicit_port,
            path: self.path.clone(),
            userinfo: self.userinfo.clone(),
            raw_userinfo: self.raw_userinfo.clone(),
        })
    }

    /// Build a target from validated parts, deriving the authority and the text.
    fn assemble(parts: Parts) -> Target {
        let bracketed = if parts.ipv6 {
            format!("[{}]", parts.host)
        } else {
            parts.host.clone()
        };
        let authority = if parts.explicit_port {
            format!("{bracketed}:{}", parts.port)
        } else {
            bracketed
        };
        let scheme = if parts.https { "https" } else { "http" };
        let text = match &parts.raw_userinfo {
            Some(userinfo) => format!("{scheme}://{userinfo}@{authority}{}", parts.path),
            None => format!("{scheme}://{authority}{}", parts.path),
        };
        Target {
            text,
            https: parts.https,
            host: parts.host,
            port: parts.port,
            explicit_port: parts.explicit_port,
            authority,
            path: parts.path,
            userinfo: parts.userinfo,
            raw_userinfo: parts.raw_userinfo,
        }
    }
}

/// The validated pieces a [`Target`] is assembled from.
struct Parts {
    https: bool,
    host: String,
    ipv6: bool,
    port: u16,
    explicit_port: bool,
    path: String,
    userinfo: Option<(String, String)>,
    raw_userinfo: Option<String>,
}

impl fmt::Display for Target {
    /// Writes [`Target::as_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Target {
    type Err = SiteError;

    /// Same as [`Target::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::parse(s)
    }
}

fn missing_host() -> String {
    "missing host, write it as http://host:port (did a stray word end up as a site?)".to_owned()
}

/// Split `host[:port]` or `[v6][:port]` as written; the port is `Some("")` for a bare `:`.
fn split_host_port(host_port: &str) -> (&str, Option<&str>) {
    if host_port.starts_with('[') {
        if let Some(close) = host_port.find(']') {
            let (host, after) = host_port.split_at(close + 1);
            return (host, after.strip_prefix(':'));
        }
        return (host_port, None);
    }
    match host_port.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    }
}

/// RFC 1123 host name check: every label matches `^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$`.
fn valid_host_name(name: &str) -> bool {
    name.split('.').all(|label| {
        let bytes = label.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                first.is_ascii_alphanumeric()
                    && last.is_ascii_alphanumeric()
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            }
            _ => false,
        }
    })
}

/// Decode `%XX` escapes; `None` when the result is not UTF-8. Malformed escapes are kept as is.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes.get(i), bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'%'), Some(&hi), Some(&lo)) => hex_value(hi).zip(hex_value(lo)),
            _ => None,
        };
        match escaped {
            Some((hi, lo)) => {
                out.push(hi * 16 + lo);
                i += 3;
            }
            None => {
                out.extend(bytes.get(i));
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Why a SITE argument or endpoint was rejected: names the offending text and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteError {
    input: String,
    reason: String,
}

impl SiteError {
    fn new(input: &str, reason: impl Into<String>) -> SiteError {
        SiteError {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }

    /// The offending text: the whole SITE argument, one pool, or one endpoint.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Why the text was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for SiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid endpoint `{}`: {}", self.input, self.reason)
    }
}

impl std::error::Error for SiteError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Expected outcome of one table case.
    enum Want {
        /// Full expansion, as `as_str()` values.
        Ok(&'static [&'static str]),
        /// `input()` must contain the first string, `reason()` the second.
        Err(&'static str, &'static str),
    }
    use Want::{Err as E, Ok as O};

    const CASES: &[(&str, Want)] = &[
        // ---- valid ----
        ("http://10.0.0.1:9000", O(&["http://10.0.0.1:9000"])),
        ("http://10.0.0.1:9000/", O(&["http://10.0.0.1:9000"])),
        ("http://h///", O(&["http://h"])),
        ("HTTP://MinIO1:9000", O(&["http://minio1:9000"])),
        ("http://h:80", O(&["http://h:80"])),
        ("http://[::1]:9000", O(&["http://[::1]:9000"])),
        ("https://[2001:DB8::1]", O(&["https://[2001:db8::1]"])),
        (
            "http://user:secret@minio:9000",
            O(&["http://user:secret@minio:9000"]),
        ),
        (
            "http://172.17.0.{2...5}",
            O(&[
                "http://172.17.0.2",
                "http://172.17.0.3",
                "http://172.17.0.4",
                "http://172.17.0.5",
            ]),
        ),
        (
            "http://172.17.0.{2...3}:9000,http://172.17.0.{6...7}:9000",
            O(&[
                "http://172.17.0.2:9000",
                "http://172.17.0.3:9000",
                "http://172.17.0.6:9000",
                "http://172.17.0.7:9000",
            ]),
        ),
        (
            "https://h{1...3}:9000/base/",
            O(&[
                "https://h1:9000/base",
                "https://h2:9000/base",
                "https://h3:9000/base",
            ]),
        ),
        (
            "http://h{1...2}.dc{1...3}:9000",
            O(&[
                "http://h1.dc1:9000",
                "http://h2.dc1:9000",
                "http://h1.dc2:9000",
                "http://h2.dc2:9000",
                "http://h1.dc3:9000",
                "http://h2.dc3:9000",
            ]),
        ),
        (
            "http://a{1...2}b{1...2}c{1...2}",
            O(&[
                "http://a1b1c1",
                "http://a2b1c1",
                "http://a1b2c1",
                "http://a2b2c1",
                "http://a1b1c2",
                "http://a2b1c2",
                "http://a1b2c2",
                "http://a2b2c2",
            ]),
        ),
        // Mixed braced and plain pools: allowed here (upstream refuses).
        (
            "http://a:9000,http://b{1...2}:9000,http://c:9000",
            O(&[
                "http://a:9000",
                "http://b1:9000",
                "http://b2:9000",
                "http://c:9000",
            ]),
        ),
        ("http://a,http://a", O(&["http://a", "http://a"])),
        (
            "http://h{a...d}",
            O(&["http://ha", "http://hb", "http://hc", "http://hd"]),
        ),
        (
            "http://h{8...b}",
            O(&["http://h8", "http://h9", "http://ha", "http://hb"]),
        ),
        (
            "http://h{01...10}",
            O(&[
                "http://h01",
                "http://h02",
                "http://h03",
                "http://h04",
                "http://h05",
                "http://h06",
                "http://h07",
                "http://h08",
                "http://h09",
                "http://h10",
            ]),
        ),
        (
            "http://h{098...100}",
            O(&["http://h098", "http://h099", "http://h100"]),
        ),
        (
            "http://h{0...3}",
            O(&["http://h0", "http://h1", "http://h2", "http://h3"]),
        ),
        (
            "http://h{1...010}",
            O(&[
                "http://h001",
                "http://h002",
                "http://h003",
                "http://h004",
                "http://h005",
                "http://h006",
                "http://h007",
                "http://h008",
                "http://h009",
                "http://h010",
            ]),
        ),
        (
            "http://h{0001...10}",
            O(&[
                "http://h01",
                "http://h02",
                "http://h03",
                "http://h04",
                "http://h05",
                "http://h06",
                "http://h07",
                "http://h08",
                "http://h09",
                "http://h10",
            ]),
        ),
        (
            "http://h{08...0b}",
            O(&["http://h08", "http://h09", "http://h0a", "http://h0b"]),
        ),
        ("http://h{7...7}", O(&["http://h7"])),
        // ---- invalid ----
        ("", E("", "empty")),
        ("   ", E("   ", "empty")),
        ("http://a,", E("http://a,", "empty pool")),
        ("http://a,,http://b", E("http://a,,http://b", "empty pool")),
        (",http://a", E(",http://a", "empty pool")),
        ("ftp://h:9000", E("ftp://h:9000", "ftp")),
        ("minio1:9000", E("minio1:9000", "missing scheme")),
        ("10.0.0.1:9000", E("10.0.0.1:9000", "missing scheme")),
        ("sidekick", E("sidekick", "missing scheme")),
        (
            "//h:9000",
            E("//h:9000", "missing scheme, write http://h:9000"),
        ),
        ("http:h:9000", E("http:h:9000", "missing scheme")),
        ("http://h\\x", E("http://h\\x", "backslash")),
        ("http://", E("http://", "missing host")),
        ("http:///x", E("http:///x", "missing host")),
        ("http://:9000", E("http://:9000", "missing host")),
        ("http://u:p@:9000", E("http://u:p@:9000", "missing host")),
        ("http://h{A...C}", E("h{A...C}", "{N...M}")),
        ("http://h{1..4}", E("h{1..4}", "{N...M}")),
        ("http://h{1....4}", E("h{1....4}", "{N...M}")),
        ("http://h{1...4", E("h{1...4", "{N...M}")),
        ("http://h}1...4{", E("h}1...4{", "{N...M}")),
        ("http://h{1...2}x}", E("x}", "{N...M}")),
        ("http://h{{1...2}}", E("h{{1...2}}", "{N...M}")),
        ("http://h{}", E("h{}", "{N...M}")),
        ("http://h{g...h}", E("h{g...h}", "{N...M}")),
        ("http://h{...3}", E("h{...3}", "empty bound")),
        ("http://h{1...}", E("h{1...}", "empty bound")),
        (
            "http://h{5...1}",
            E("h{5...1}", "range start 5 is bigger than end 1"),
        ),
        (
            "http://h{99999999999999999999...1}",
            E("h{9999", "too large"),
        ),
        ("http://h{1...1001}.{1...1000}", E("h{1...1001}", "1001000")),
        (
            "http://h{0...ffffffffffffffff}.{0...ffffffffffffffff}.{0...ffffffffffffffff}",
            E("ffff", "limit"),
        ),
        ("http://my_host:9000", E("my_host", "host")),
        ("http://-h:9000", E("-h", "host")),
        ("http://h:0", E("http://h:0", "port")),
        ("http://h:70000", E("http://h:70000", "port")),
        ("http://h:", E("http://h:", "port")),
        ("http://h:9000?x=1", E("?x=1", "query")),
        ("http://h:9000#frag", E("#frag", "fragment")),
        (
            "http://a:9000,https://b:9000",
            E("https://b:9000", "scheme"),
        ),
        ("https://a{1...2},http://b", E("http://b", "scheme")),
        (
            "http://a:9000, http://b:9000",
            E(" http://b:9000", "whitespace"),
        ),
    ];

    #[test]
    fn table() {
        assert!(CASES.len() >= 35, "only {} cases", CASES.len());
        for (arg, want) in CASES {
            let got = parse_site(arg);
            match (want, got) {
                (O(expected), Ok(targets)) => {
                    let got: Vec<&str> = targets.iter().map(Target::as_str).collect();
                    assert_eq!(&got, expected, "expansion of {arg:?}");
                }
                (E(input, reason), Err(err)) => {
                    assert!(
                        err.input().contains(input),
                        "{arg:?}: input {:?} should contain {input:?}",
                        err.input()
                    );
                    assert!(
                        err.reason().contains(reason),
                        "{arg:?}: reason {:?} should contain {reason:?}",
                        err.reason()
                    );
                }
                (O(_), Err(err)) => panic!("{arg:?} should parse, got: {err}"),
                (E(..), Ok(targets)) => panic!("{arg:?} should fail, got {targets:?}"),
            }
        }
    }

    #[test]
    fn expand_pool_plain_and_ranges() {
        assert_eq!(
            expand_pool("no ranges at all").expect("plain"),
            vec!["no ranges at all".to_owned()]
        );
        assert_eq!(expand_pool("").expect("empty"), vec![String::new()]);
        assert_eq!(
            expand_pool("x{1...3}y").expect("range"),
            vec!["x1y", "x2y", "x3y"]
        );
        // Decimal start, hex end: the whole sequence is hex.
        assert_eq!(
            expand_pool("{9...c}").expect("hex"),
            vec!["9", "a", "b", "c"]
        );
        assert!(
            expand_pool("{1...2},").is_ok(),
            "commas are not special here"
        );
    }

    #[test]
    fn error_display() {
        let err = parse_site("ftp://h").expect_err("ftp is refused");
        assert_eq!(err.input(), "ftp://h");
        assert_eq!(
            err.to_string(),
            format!("invalid endpoint `ftp://h`: {}", err.reason())
        );
        let boxed: Box<dyn std::error::Error> = Box::new(err);
        assert!(boxed.to_string().starts_with("invalid endpoint"));
    }

    #[test]
    fn accessors_http_default_port() {
        let t = Target::parse("http://MinIO1/").expect("valid");
        assert_eq!(t.as_str(), "http://minio1");
        assert_eq!(t.to_string(), "http://minio1");
        assert!(!t.is_https());
        assert_eq!(t.scheme(), "http");
        assert_eq!(t.host(), "minio1");
        assert_eq!(t.port(), 80);
        assert_eq!(t.authority(), "minio1");
        assert_eq!(t.path(), "");
        assert_eq!(t.userinfo(), None);
    }

    #[test]
    fn accessors_https_default_and_explicit_port() {
        let t = Target::parse("https://minio1:9000/base/").expect("valid");
        assert!(t.is_https());
        assert_eq!(t.scheme(), "https");
        assert_eq!(t.port(), 9000);
        assert_eq!(t.authority(), "minio1:9000");
        assert_eq!(t.path(), "/base");
        assert_eq!(t.as_str(), "https://minio1:9000/base");

        let t: Target = "https://minio1".parse().expect("valid");
        assert_eq!(t.port(), 443);
        assert_eq!(t.authority(), "minio1");

        // An explicitly written default port is kept in the authority.
        let t = Target::parse("https://minio1:443").expect("valid");
        assert_eq!(t.port(), 443);
        assert_eq!(t.authority(), "minio1:443");
    }

    #[test]
    fn accessors_ipv4_ipv6_userinfo() {
        let t = Target::parse("http://10.0.0.1:9000").expect("valid");
        assert_eq!(t.host(), "10.0.0.1");
        assert_eq!(t.authority(), "10.0.0.1:9000");

        let t = Target::parse("http://[::1]:9000").expect("valid");
        assert_eq!(t.host(), "::1");
        assert_eq!(t.authority(), "[::1]:9000");
        assert_eq!(t.port(), 9000);

        let t = Target::parse("http://[::1]").expect("valid");
        assert_eq!(t.authority(), "[::1]");
        assert_eq!(t.port(), 80);

        let t = Target::parse("http://u%40x:p%3As@h:9000/p").expect("valid");
        assert_eq!(t.userinfo(), Some(("u@x", "p:s")));
        assert_eq!(t.as_str(), "http://u%40x:p%3As@h:9000/p");
        assert_eq!(t.authority(), "h:9000");

        let t = Target::parse("http://admin@h").expect("valid");
        assert_eq!(t.userinfo(), Some(("admin", "")));
    }

    #[test]
    fn with_host_v4_and_v6() {
        let t = Target::parse("https://u:p@minio.example:9000/base").expect("valid");
        let v4 = t.with_host(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(v4.host(), "10.1.2.3");
        assert_eq!(v4.authority(), "10.1.2.3:9000");
        assert_eq!(v4.as_str(), "https://u:p@10.1.2.3:9000/base");
        assert_eq!(v4.port(), 9000);
        assert!(v4.is_https());
        assert_eq!(v4.path(), "/base");
        assert_eq!(v4.userinfo(), Some(("u", "p")));

        let v6 = t.with_host(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)));
        assert_eq!(v6.host(), "2001:db8::7");
        assert_eq!(v6.authority(), "[2001:db8::7]:9000");
        assert_eq!(v6.as_str(), "https://u:p@[2001:db8::7]:9000/base");
        // The result is itself a valid endpoint.
        assert_eq!(Target::parse(v6.as_str()).expect("reparse"), v6);

        let plain = Target::parse("http://minio").expect("valid");
        let v6 = plain.with_host(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(v6.authority(), "[::1]");
        assert_eq!(v6.as_str(), "http://[::1]");
        assert_eq!(v6.port(), 80);
    }

    /// Ranges `(start, size)` for the property tests; total size at most 12^3 = 1728.
    fn ranges_strategy() -> impl Strategy<Value = Vec<(u32, u32)>> {
        prop::collection::vec((0u32..5000, 1u32..=12), 1..=3)
    }

    /// `http://n{a...b}.n{c...d}.n{e...f}:9000`-style template for `ranges`.
    fn template(ranges: &[(u32, u32)]) -> String {
        let labels: Vec<String> = ranges
            .iter()
            .map(|(start, size)| format!("n{{{start}...{}}}", start + size - 1))
            .collect();
        format!("http://{}:9000", labels.join("."))
    }

    proptest! {
        #[test]
        fn prop_count_is_product(ranges in ranges_strategy()) {
            let site = template(&ranges);
            let targets = parse_site(&site).expect("valid template");
            let product: usize = ranges.iter().map(|(_, size)| *size as usize).product();
            prop_assert!(product <= 2000);
            prop_assert_eq!(targets.len(), product);
            prop_assert_eq!(expand_pool(&site).expect("valid").len(), product);
        }

        #[test]
        fn prop_leftmost_varies_fastest(ranges in ranges_strategy()) {
            let site = template(&ranges);
            let targets = parse_site(&site).expect("valid template");
            for (k, target) in targets.iter().enumerate() {
                let labels: Vec<&str> = target.host().split('.').collect();
                prop_assert_eq!(labels.len(), ranges.len());
                let mut index = 0usize;
                let mut stride = 1usize;
                for (label, (start, size)) in labels.iter().zip(&ranges) {
                    let value: u32 = label
                        .strip_prefix('n')
                        .and_then(|v| v.parse().ok())
                        .expect("label n<number>");
                    prop_assert!(value >= *start && value < start + size);
                    index += (value - start) as usize * stride;
                    stride *= *size as usize;
                }
                prop_assert_eq!(index, k, "{} at position {}", target, k);
            }
        }

        #[test]
        fn prop_never_panics_any_string(s in any::<String>()) {
            check_no_panic(&s)?;
        }

        #[test]
        fn prop_never_panics_site_like(s in "[{}.,:/a-z0-9_\\[\\]-]{0,40}") {
            check_no_panic(&s)?;
        }

        #[test]
        fn prop_never_panics_endpoint_like(
            s in "(https?|HTTP|ftp)?(://)?([a-z0-9_@%:-]{0,8}@)?(\\[[0-9a-f:.]{0,12}\\]|[a-z0-9.{}_-]{0,12})(:[0-9]{0,6})?(/[a-z0-9./%?#]{0,8})?,?"
        ) {
            check_no_panic(&s)?;
        }
    }

    /// Parse `s`; whatever comes back, accepted targets must be stable under re-parsing.
    fn check_no_panic(s: &str) -> Result<(), TestCaseError> {
        let _ = expand_pool(s);
        if let Ok(targets) = parse_site(s) {
            for target in targets {
                let again = Target::parse(target.as_str());
                prop_assert_eq!(again.as_ref(), Ok(&target), "re-parse of {}", target);
            }
        }
        Ok(())
    }
}
