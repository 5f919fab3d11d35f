//! What the cache needs to know: where the cache store is, how to sign for it, which bucket to
//! use, how large an object must be to be worth a copy, and how often to check the store.
//!
//! The same settings come from the library's builder ([`CacheConfig::builder`]) and from the
//! sidecar's environment ([`CacheConfig::from_env`], the `SIDEKICK_CACHE_*` variables of MinIO's
//! sidekick). Both validate every value and reject a bad one with an error that names it: the
//! setter for the builder, the variable for the environment.

use std::fmt;
use std::time::Duration;

use crate::error::Error;

/// `SIDEKICK_CACHE_ENDPOINT`: the cache store's URL; unset or empty turns the cache off.
pub const ENV_ENDPOINT: &str = "SIDEKICK_CACHE_ENDPOINT";
/// `SIDEKICK_CACHE_ACCESS_KEY`: access key for the cache store.
pub const ENV_ACCESS_KEY: &str = "SIDEKICK_CACHE_ACCESS_KEY";
/// `SIDEKICK_CACHE_SECRET_KEY`: secret key for the cache store.
pub const ENV_SECRET_KEY: &str = "SIDEKICK_CACHE_SECRET_KEY";
/// `SIDEKICK_CACHE_BUCKET`: the bucket entries are kept in (it must exist).
pub const ENV_BUCKET: &str = "SIDEKICK_CACHE_BUCKET";
/// `SIDEKICK_CACHE_MIN_SIZE`: the smallest body worth caching, e.g. `32MiB`.
pub const ENV_MIN_SIZE: &str = "SIDEKICK_CACHE_MIN_SIZE";
/// `SIDEKICK_CACHE_HEALTH_DURATION`: seconds between two checks of the cache store.
pub const ENV_HEALTH_DURATION: &str = "SIDEKICK_CACHE_HEALTH_DURATION";

/// Default smallest cached body: 1 MiB (sidekick's default).
pub const DEFAULT_MIN_SIZE: u64 = 1 << 20;
/// Default time between two health checks of the cache store: 60 s (sidekick's default).
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(60);
/// Default bound on one cache store operation: 2 s.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default region the cache store's requests are signed for.
pub const DEFAULT_REGION: &str = "us-east-1";

/// The settings of a shared S3 cache. Build one with [`CacheConfig::builder`] or read the
/// `SIDEKICK_CACHE_*` variables with [`CacheConfig::from_env`].
///
/// ```
/// use std::time::Duration;
/// let cfg = sidekick::cache::CacheConfig::builder()
///     .endpoint("http://127.0.0.1:9100")
///     .access_key("cache-user")
///     .secret_key("cache-secret")
///     .bucket("cache01")
///     .min_size(32 << 20)
///     .health_interval(Duration::from_secs(20))
///     .build()?;
/// assert_eq!(cfg.min_size(), 32 << 20);
/// # Ok::<(), sidekick::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct CacheConfig {
    endpoint: String,
    access_key: String,
    secret_key: String,
    bucket: String,
    region: String,
    min_size: u64,
    health_interval: Duration,
    store_timeout: Duration,
}

impl fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret never reaches a log line.
        f.debug_struct("CacheConfig")
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("min_size", &self.min_size)
            .field("health_interval", &self.health_interval)
            .field("store_timeout", &self.store_timeout)
            .finish()
    }
}

impl CacheConfig {
    /// A builder with every setting at its default; endpoint, keys and bucket have none and
    /// must be set.
    pub fn builder() -> CacheConfigBuilder {
        CacheConfigBuilder::default()
    }

    /// Read the `SIDEKICK_CACHE_*` environment variables. `Ok(None)` when
    /// `SIDEKICK_CACHE_ENDPOINT` is unset or empty (no cache); an error naming the variable
    /// when one is missing or bad. See [`CacheConfig::from_lookup`] for the rules.
    pub fn from_env() -> Result<Option<CacheConfig>, Error> {
        CacheConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`CacheConfig::from_env`], with the variables looked up by `lookup` (a map in
    /// tests, another configuration source in programs).
    ///
    /// - `SIDEKICK_CACHE_ENDPOINT`: `http://` or `https://` URL of the cache store, host
    ///   required, no path, query or user info. Unset or empty: the cache is off and the other
    ///   variables are not read.
    /// - `SIDEKICK_CACHE_ACCESS_KEY`, `SIDEKICK_CACHE_SECRET_KEY`, `SIDEKICK_CACHE_BUCKET`:
    ///   required with an endpoint. The bucket must exist; it is never created.
    /// - `SIDEKICK_CACHE_MIN_SIZE`: see [`parse_size`]; default 1 MiB.
    /// - `SIDEKICK_CACHE_HEALTH_DURATION`: whole seconds, at least 1; default 60.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<CacheConfig>, Error> {
        let endpoint = match lookup(ENV_ENDPOINT) {
            Some(v) if !v.trim().is_empty() => v.trim().to_string(),
            _ => return Ok(None),
        };
        check_endpoint(&endpoint)
            .map_err(|m| Error::config(format!("{ENV_ENDPOINT}={endpoint:?}: {m}")))?;
        let required = |name: &str| -> Result<String, Error> {
            match lookup(name) {
                Some(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
                _ => Err(Error::config(format!(
                    "{name} is required when {ENV_ENDPOINT} is set"
                ))),
            }
        };
        let access_key = required(ENV_ACCESS_KEY)?;
        let secret_key = required(ENV_SECRET_KEY)?;
        let bucket = required(ENV_BUCKET)?;
        check_bucket(&bucket)
            .map_err(|m| Error::config(format!("{ENV_BUCKET}={bucket:?}: {m}")))?;
        let min_size = match lookup(ENV_MIN_SIZE) {
            Some(v) if !v.trim().is_empty() => {
                parse_size(&v).map_err(|m| Error::config(format!("{ENV_MIN_SIZE}={v:?}: {m}")))?
            }
            _ => DEFAULT_MIN_SIZE,
        };
        let health_interval = match lookup(ENV_HEALTH_DURATION) {
            Some(v) if !v.trim().is_empty() => parse_seconds(&v)
                .map_err(|m| Error::config(format!("{ENV_HEALTH_DURATION}={v:?}: {m}")))?,
            _ => DEFAULT_HEALTH_INTERVAL,
        };
        Ok(Some(CacheConfig {
            endpoint,
            access_key,
            secret_key,
            bucket,
            region: DEFAULT_REGION.to_string(),
            min_size,
            health_interval,
            store_timeout: DEFAULT_STORE_TIMEOUT,
        }))
    }

    /// The cache store's URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The access key.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The bucket entries are kept in.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The region requests to the cache store are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Bodies shorter than this many bytes are not cached.
    pub fn min_size(&self) -> u64 {
        self.min_size
    }

    /// Time between two health checks of the cache store.
    pub fn health_interval(&self) -> Duration {
        self.health_interval
    }

    /// Bound on one cache store operation.
    pub fn store_timeout(&self) -> Duration {
        self.store_timeout
    }
}

/// Builds a [`CacheConfig`]; [`CacheConfigBuilder::build`] validates every value and names the
/// first bad one.
#[derive(Clone, Default)]
#[must_use]
pub struct CacheConfigBuilder {
    endpoint: Option<String>,
    access_key: Option<String>,
    secret_key: Option<String>,
    bucket: Option<String>,
    region: Option<String>,
    min_size: Option<u64>,
    health_interval: Option<Duration>,
    store_timeout: Option<Duration>,
}

impl fmt::Debug for CacheConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheConfigBuilder")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl CacheConfigBuilder {
    /// The cache store's URL: `http://host:port` or `https://host:port`, no path. No default:
    /// required.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The access key of the cache store. No default: required.
    pub fn access_key(mut self, key: impl Into<String>) -> Self {
        self.access_key = Some(key.into());
        self
    }

    /// The secret key of the cache store. No default: required.
    pub fn secret_key(mut self, key: impl Into<String>) -> Self {
        self.secret_key = Some(key.into());
        self
    }

    /// The bucket entries are kept in; it must exist (it is never created). No default:
    /// required.
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// The region requests to the cache store are signed for. Default `us-east-1`.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Bodies shorter than this many bytes are not cached (0 caches every body). Default
    /// 1 MiB ([`DEFAULT_MIN_SIZE`]).
    pub fn min_size(mut self, bytes: u64) -> Self {
        self.min_size = Some(bytes);
        self
    }

    /// Time between two health checks of the cache store; more than zero. Default 60 s
    /// ([`DEFAULT_HEALTH_INTERVAL`]).
    pub fn health_interval(mut self, every: Duration) -> Self {
        self.health_interval = Some(every);
        self
    }

    /// Bound on one cache store operation: a lookup until the entry's head is read, a delete,
    /// a health check, the answer to an upload once its body is sent, the wait for the next
    /// piece of a cached body. A request never waits longer than this for the cache before it
    /// is served without it. More than zero. Default 2 s ([`DEFAULT_STORE_TIMEOUT`]).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = Some(timeout);
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<CacheConfig, Error> {
        let endpoint = self
            .endpoint
            .map(|s| s.trim().to_string())
            .ok_or_else(|| Error::config("cache endpoint is required"))?;
        check_endpoint(&endpoint)
            .map_err(|m| Error::config(format!("cache endpoint {endpoint:?}: {m}")))?;
        let access_key = nonempty(self.access_key, "cache access_key")?;
        let secret_key = nonempty(self.secret_key, "cache secret_key")?;
        let bucket = nonempty(self.bucket, "cache bucket")?;
        check_bucket(&bucket)
            .map_err(|m| Error::config(format!("cache bucket {bucket:?}: {m}")))?;
        let region = match self.region {
            Some(r) if r.trim().is_empty() => {
                return Err(Error::config("cache region must not be empty"))
            }
            Some(r) => r.trim().to_string(),
            None => DEFAULT_REGION.to_string(),
        };
        let health_interval = self.health_interval.unwrap_or(DEFAULT_HEALTH_INTERVAL);
        if health_interval.is_zero() {
            return Err(Error::config(
                "cache health_interval must be more than zero",
            ));
        }
        let store_timeout = self.store_timeout.unwrap_or(DEFAULT_STORE_TIMEOUT);
        if store_timeout.is_zero() {
            return Err(Error::config("cache store_timeout must be more than zero"));
        }
        Ok(CacheConfig {
            endpoint,
            access_key,
            secret_key,
            bucket,
            region,
            min_size: self.min_size.unwrap_or(DEFAULT_MIN_SIZE),
            health_interval,
            store_timeout,
        })
    }
}

fn nonempty(v: Option<String>, what: &str) -> Result<String, Error> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err(Error::config(format!("{what} is required"))),
    }
}

/// Why an endpoint URL is unusable, if it is.
fn check_endpoint(s: &str) -> Result<(), String> {
    let url = url::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("host is missing".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("user info is not allowed (use the access and secret keys)".to_string());
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(format!("a path ({:?}) is not allowed", url.path()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a query or fragment is not allowed".to_string());
    }
    Ok(())
}

/// Why a bucket name is unusable, if it is (S3's rules, loosely: 3 to 63 characters of
/// lowercase letters, digits, `.` and `-`).
fn check_bucket(s: &str) -> Result<(), String> {
    if !(3..=63).contains(&s.len()) {
        return Err("must be 3 to 63 characters long".to_string());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-')))
    {
        return Err(format!(
            "{c:?} is not allowed (lowercase letters, digits, '.' and '-')"
        ));
    }
    Ok(())
}

/// Parse a size: a number with an optional unit, case-insensitive, with or without a space
/// between: `B`, `KiB`, `MiB`, `GiB` (powers of 1024), `KB`, `MB`, `GB` (powers of 1000). A
/// bare number is bytes (`1048576`), as with sidekick. The number may have a fraction
/// (`1.5MiB`); the result is rounded down to whole bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err("expected a number with an optional unit, e.g. 32MiB".to_string());
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    let too_large = || "too large".to_string();
    match num.split_once('.') {
        None => num
            .parse::<u64>()
            .map_err(|_| too_large())?
            .checked_mul(mult)
            .ok_or_else(too_large),
        Some((whole, frac)) => {
            if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
                return Err(format!("{num:?} is not a number"));
            }
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| too_large())?
            };
            let base = whole.checked_mul(mult).ok_or_else(too_large)?;
            // The fraction, digit by digit, in exact integer arithmetic.
            let mut part: u128 = 0;
            let mut scale: u128 = 1;
            for d in frac.bytes().take(18) {
                part = part * 10 + u128::from(d - b'0');
                scale *= 10;
            }
            let extra = (part * u128::from(mult) / scale) as u64;
            base.checked_add(extra).ok_or_else(too_large)
        }
    }
}

/// Parse whole seconds, at least 1.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a whole number of seconds, e.g. 20".to_string())?;
    if n == 0 {
        return Err("must be at least 1 second".to_string());
    }
    Ok(Duration::from_secs(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (s, want) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("32MiB", 32 << 20),
            ("32 mib", 32 << 20),
            ("64MB", 64_000_000),
            ("1.5KiB", 1536),
            ("2GiB", 2 << 30),
            ("3gb", 3_000_000_000),
            ("7B", 7),
            (".5KB", 500),
        ] {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
        for s in [
            "",
            "MiB",
            "12XB",
            "-1",
            "1.2.3",
            "99999999999999999999",
            "20000000000GiB",
            ".",
        ] {
            assert!(parse_size(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn endpoints() {
        assert!(check_endpoint("http://127.0.0.1:9000").is_ok());
        assert!(check_endpoint("https://cache.example:443/").is_ok());
        for bad in [
            "127.0.0.1:9000",
            "ftp://h:1",
            "http://u:p@h:1",
            "http://h:1/bucket",
            "http://h:1?x=1",
            "http://",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builder_names_bad_values_and_hides_the_secret() {
        let ok = CacheConfig::builder()
            .endpoint("http://127.0.0.1:1")
            .access_key("a")
            .secret_key("very-secret")
            .bucket("cache01");
        let cfg = ok.clone().build().unwrap();
        assert_eq!(cfg.min_size(), DEFAULT_MIN_SIZE);
        assert_eq!(cfg.health_interval(), DEFAULT_HEALTH_INTERVAL);
        assert_eq!(cfg.region(), DEFAULT_REGION);
        assert!(!format!("{cfg:?}").contains("very-secret"));
        let e = ok.clone().bucket("UPPER").build().unwrap_err();
        assert!(e.to_string().contains("cache bucket"), "{e}");
        let e = ok
            .clone()
            .health_interval(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("health_interval"), "{e}");
        let e = CacheConfig::builder().build().unwrap_err();
        assert!(e.to_string().contains("endpoint"), "{e}");
    }
}
