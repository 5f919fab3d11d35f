//! Live membership: endpoints and sites added, removed and replaced while the balancer runs.
//!
//! # Why
//!
//! A library embedded in a long-running client must follow a cluster that changes (a scale-up,
//! a node replaced, a replica site added) without being rebuilt: rebuilding would throw away
//! what the balancer learnt (latency estimates, health, ejections) and, for a moment, the
//! connections in flight. So a [`Balancer`] can change its sites in place, from any thread:
//!
//! - [`Balancer::add_endpoint`], [`Balancer::remove_endpoint`]: one endpoint of one site;
//! - [`Balancer::set_site`]: replace a site's endpoints by a SITE text (or append a site);
//! - [`Balancer::add_site`], [`Balancer::remove_site`], [`Balancer::set_sites`]: the sites
//!   themselves (`set_sites` is what the sidecar applies on SIGHUP);
//! - [`Balancer::follow`]: apply a stream of [`Change`]s, the shape of tower's `Discover`.
//!
//! # What a change guarantees
//!
//! - **Endpoints that stay keep their state.** A change compares targets (scheme, host, port,
//!   base path, user information); an endpoint whose target is still wanted is the very same
//!   object afterwards: latency estimate, health, in-flight count, ejection.
//! - **Removed endpoints are never picked again once the call returns.** The site's endpoint
//!   list is replaced before the call returns, and picks read only the list in force. Their
//!   outstanding [`Lease`](crate::Lease)s finish normally (a lease holds its endpoint), but
//!   their outcomes no longer change anything. Their probe task, DNS task and trial timer end.
//! - **Added endpoints are probed before they take traffic** when probes are on (they enter
//!   rotation after their first passing probe, like at start), and take traffic at once when
//!   probes are off.
//! - **Bad input is refused whole**, with an error naming it ([`Error::is_membership`] for an
//!   unknown endpoint or site, a duplicate, a mixed scheme, a change that would leave a site or
//!   the balancer empty; [`Error::is_config`] for a URL or SITE text that does not parse), and
//!   nothing is changed.
//!
//! Changes are serialised by one lock that the request path never takes; a pick reads the site
//! list and each site's endpoint list through `ArcSwap`s, as before. [`Event::Added`] and
//! [`Event::Removed`] report each change. [`Balancer::probe_tasks`] and
//! [`Balancer::dns_tasks`] count the tasks alive, so a test can check that none is left behind.
//!
//! Site positions are 0-based (like [`Lease::site`](crate::Lease::site)). Removing a site moves
//! the later ones up one place. A site's health-check path is decided when the site is created:
//! with a last-site path (`last_site_health_path`), a site appended later gets it, and the site
//! that was last keeps its own.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard};

use futures_util::{Stream, StreamExt};

use crate::balancer::{site_probe_path, Balancer, Core};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::event::Event;
use crate::site::{Member, Site};
use crate::target::{self, Target};

/// What a membership change did, counted in targets (a host name fanned out by DNS counts once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Changes {
    /// Targets added.
    pub added: usize,
    /// Targets removed.
    pub removed: usize,
    /// Targets that stayed, with their state.
    pub kept: usize,
}

impl Changes {
    fn plus(self, other: Changes) -> Changes {
        Changes {
            added: self.added + other.added,
            removed: self.removed + other.removed,
            kept: self.kept + other.kept,
        }
    }
}

/// One change of a membership stream, in the shape of tower's `discover::Change`: a key (the
/// endpoint URL) inserted with its value (the site position), or removed. See
/// [`Balancer::follow`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add the endpoint `url` to the site at this position.
    Insert(String, usize),
    /// Remove the endpoint `url` from every site that has it.
    Remove(String),
}

/// What [`Balancer::follow`] did before its stream ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Followed {
    /// Changes applied.
    pub applied: u64,
    /// Changes refused (a bad URL, an unknown endpoint...; each one is logged).
    pub refused: u64,
}

/// Counts a live task: one more while it exists (created before the task is spawned, dropped
/// with the task's future, whether it ended or was dropped by a runtime shutting down).
#[derive(Debug)]
pub(crate) struct TaskCount(Arc<AtomicUsize>);

impl TaskCount {
    pub(crate) fn new(counter: &Arc<AtomicUsize>) -> TaskCount {
        counter.fetch_add(1, Ordering::AcqRel);
        TaskCount(counter.clone())
    }
}

impl Drop for TaskCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The URL an endpoint is known by: its target without user information (what events,
/// [`EndpointInfo::url`](crate::EndpointInfo::url) and leases show).
fn shown_url(t: &Target) -> String {
    format!("{}://{}{}", t.scheme(), t.authority(), t.path())
}

fn site_error(index: usize, count: usize) -> Error {
    Error::membership(format!(
        "no site at index {index}: the balancer has {count} site(s), numbered from 0"
    ))
}

impl Core {
    fn lock_changes(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.changing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the members of `site` exactly `wanted` (duplicates allowed, matched one to one):
    /// members whose target is wanted stay with their endpoints, the others leave, the missing
    /// ones are enlisted. Call with the change lock held. Nothing changes on error.
    fn reshape(&self, site: &Arc<Site>, wanted: Vec<Target>) -> Result<Changes, Error> {
        let mut fresh: Vec<Arc<Endpoint>> = Vec::new();
        let mut added_urls = Vec::new();
        let mut removed_urls = Vec::new();
        let kept;
        {
            let mut roster = site.lock();
            let mut keep = vec![false; roster.members.len()];
            let mut missing = Vec::new();
            for t in wanted {
                let found = roster
                    .members
                    .iter()
                    .enumerate()
                    .position(|(i, m)| !keep[i] && *m.target == t);
                match found {
                    Some(i) => keep[i] = true,
                    None => missing.push(t),
                }
            }
            kept = keep.iter().filter(|k| **k).count();
            if missing.is_empty() && kept == keep.len() {
                return Ok(Changes {
                    kept,
                    ..Changes::default()
                });
            }
            // Enlist every new member before changing anything, so that a failure changes
            // nothing.
            let mut recruits: Vec<(Member, Option<Arc<Endpoint>>)> = Vec::new();
            for t in missing {
                match self.enlist(site, t) {
                    Ok(r) => recruits.push(r),
                    Err(e) => {
                        for (m, _) in &recruits {
                            m.cancel.cancel();
                        }
                        return Err(e);
                    }
                }
            }
            let old = std::mem::take(&mut roster.members);
            let mut leaving = Vec::new();
            for (m, k) in old.into_iter().zip(keep) {
                if k {
                    roster.members.push(m);
                } else {
                    leaving.push(m);
                }
            }
            let gone: HashSet<u64> = leaving.iter().map(|m| m.origin).collect();
            let current = site.state.load();
            let mut next: Vec<Arc<Endpoint>> = current
                .endpoints
                .iter()
                .filter(|e| !gone.contains(&e.origin))
                .cloned()
                .collect();
            for (m, ep) in recruits {
                added_urls.push(shown_url(&m.target));
                if let Some(ep) = ep {
                    next.push(ep.clone());
                    fresh.push(ep);
                }
                roster.members.push(m);
            }
            self.publish(site, next);
            // After the publish, under the site lock: a verdict or an ejection that comes
            // next sees the endpoint retired.
            for m in leaving {
                m.cancel.cancel();
                removed_urls.push(shown_url(&m.target));
            }
        }
        for ep in &fresh {
            // An endpoint added to a running site is `joined_late`: with probes off its slow
            // start begins here, with probes on at its first passing probe.
            self.start_probe(ep);
        }
        self.reshare();
        let index = site.link.index();
        let changes = Changes {
            added: added_urls.len(),
            removed: removed_urls.len(),
            kept,
        };
        for endpoint in removed_urls {
            self.emit(Event::Removed {
                endpoint,
                site: index,
            });
        }
        for endpoint in added_urls {
            self.emit(Event::Added {
                endpoint,
                site: index,
            });
        }
        Ok(changes)
    }

    /// Append a site made of `targets`; the balancer will have `count_after` sites (for the
    /// last-site probe path). Call with the change lock held. Nothing changes on error.
    fn append_site(&self, targets: Vec<Target>, count_after: usize) -> Result<Changes, Error> {
        let before = self.sites.load_full();
        let index = before.len();
        let path = site_probe_path(&self.cfg, index, count_after.max(index + 1));
        let site = Arc::new(Site::new(index, path, &self.cancel));
        let mut next = Vec::clone(&before);
        next.push(site.clone());
        // In the list before its members are enlisted: a DNS task reports to a listed site.
        self.sites.store(Arc::new(next));
        self.refresh_view();
        match self.reshape(&site, targets) {
            Ok(c) => Ok(c),
            Err(e) => {
                self.sites.store(before);
                self.refresh_view();
                site.cancel.cancel();
                Err(e)
            }
        }
    }

    /// Remove the site at `index` (which exists; the caller checked that another remains).
    /// Call with the change lock held.
    fn drop_site(&self, index: usize) -> Changes {
        let before = self.sites.load_full();
        let mut next = Vec::clone(&before);
        let site = next.remove(index);
        self.sites.store(Arc::new(next.clone()));
        self.refresh_view();
        for (i, s) in next.iter().enumerate() {
            s.link.set_index(i);
        }
        let removed: Vec<String> = {
            let mut roster = site.lock();
            self.publish(&site, Vec::new());
            site.cancel.cancel();
            std::mem::take(&mut roster.members)
                .iter()
                .map(|m| shown_url(&m.target))
                .collect()
        };
        self.reshare();
        let changes = Changes {
            removed: removed.len(),
            ..Changes::default()
        };
        for endpoint in removed {
            self.emit(Event::Removed {
                endpoint,
                site: index,
            });
        }
        changes
    }

    /// The targets of `site` now.
    fn targets_of(site: &Site) -> Vec<Target> {
        site.lock()
            .members
            .iter()
            .map(|m| Target::clone(&m.target))
            .collect()
    }
}

fn parse_spec(spec: &str, index: usize) -> Result<Vec<Target>, Error> {
    target::parse_site(spec)
        .map_err(|e| Error::config(format!("site at index {index}: {e}")).with_source(e))
}

impl Balancer {
    /// Add the endpoint `url` (such as `http://10.0.0.5:9000`, no `{N...M}` range) to the site
    /// at position `site` (0 for the first), at run time. With probes on it takes traffic after
    /// its first passing probe; with probes off, at once. With DNS fan-out on, a host name is
    /// resolved and each address becomes an endpoint, as at start.
    ///
    /// # Errors
    ///
    /// [`Error::is_config`] when `url` is not a valid endpoint; [`Error::is_membership`] when
    /// there is no such site, the site already has this endpoint, or its scheme differs from
    /// the site's. Nothing is changed then.
    pub fn add_endpoint(&self, site: usize, url: &str) -> Result<Changes, Error> {
        let target = Target::parse(url)?;
        let core = &*self.core;
        let _changing = core.lock_changes();
        let sites = core.sites.load_full();
        let s = sites
            .get(site)
            .ok_or_else(|| site_error(site, sites.len()))?;
        let mut wanted = Core::targets_of(s);
        let url = shown_url(&target);
        if wanted.iter().any(|t| shown_url(t) == url) {
            return Err(Error::membership(format!(
                "endpoint {url} is already in the site at index {site}"
            )));
        }
        if let Some(other) = wanted.iter().find(|t| t.is_https() != target.is_https()) {
            return Err(Error::membership(format!(
                "endpoint {url} uses {} but the site at index {site} uses {} (as {}): one \
                 scheme per site",
                target.scheme(),
                other.scheme(),
                shown_url(other)
            )));
        }
        wanted.push(target);
        core.reshape(s, wanted)
    }

    /// Remove the endpoint `url` (as added or listed by [`Balancer::endpoints`]; user
    /// information is ignored) from every site that has it. It is never picked again once this
    /// returns; its outstanding leases finish normally; its tasks end.
    ///
    /// # Errors
    ///
    /// [`Error::is_config`] when `url` does not parse; [`Error::is_membership`] when no site
    /// has it, or when removing it would leave a site with no endpoint (remove that site with
    /// [`Balancer::remove_site`] or replace its endpoints with [`Balancer::set_site`]).
    /// Nothing is changed then.
    pub fn remove_endpoint(&self, url: &str) -> Result<Changes, Error> {
        let key = shown_url(&Target::parse(url)?);
        let core = &*self.core;
        let _changing = core.lock_changes();
        let sites = core.sites.load_full();
        let mut plan = Vec::new();
        for (i, s) in sites.iter().enumerate() {
            let targets = Core::targets_of(s);
            let rest: Vec<Target> = targets
                .iter()
                .filter(|t| shown_url(t) != key)
                .cloned()
                .collect();
            if rest.len() == targets.len() {
                continue;
            }
            if rest.is_empty() {
                return Err(Error::membership(format!(
                    "removing {key} would leave the site at index {i} with no endpoint: remove \
                     the site or replace its endpoints instead"
                )));
            }
            plan.push((s, rest));
        }
        if plan.is_empty() {
            return Err(Error::membership(format!(
                "endpoint {key} is in no site (an address found by DNS fan-out follows its host \
                 name: remove the host name)"
            )));
        }
        let mut total = Changes::default();
        for (s, rest) in plan {
            total = total.plus(core.reshape(s, rest)?);
        }
        Ok(total)
    }

    /// Replace the endpoints of the site at position `site` by those `spec` names (SITE
    /// notation, e.g. `http://10.0.0.{1...4}:9000`). Endpoints named before and after keep
    /// their state; the others leave or join. `site` equal to [`Balancer::site_count`] appends
    /// a new last site.
    ///
    /// # Errors
    ///
    /// [`Error::is_config`] when `spec` does not parse; [`Error::is_membership`] when `site` is
    /// beyond the end. Nothing is changed then.
    pub fn set_site(&self, site: usize, spec: &str) -> Result<Changes, Error> {
        let targets = parse_spec(spec, site)?;
        let core = &*self.core;
        let _changing = core.lock_changes();
        let sites = core.sites.load_full();
        match sites.get(site) {
            Some(s) => core.reshape(s, targets),
            None if site == sites.len() => core.append_site(targets, site + 1),
            None => Err(site_error(site, sites.len())),
        }
    }

    /// Append a last site made of the endpoints `spec` names (SITE notation); returns its
    /// position. Its endpoints are probed before they take traffic (when probes are on).
    ///
    /// # Errors
    ///
    /// [`Error::is_config`] when `spec` does not parse.
    pub fn add_site(&self, spec: &str) -> Result<usize, Error> {
        let core = &*self.core;
        let _changing = core.lock_changes();
        let index = core.sites.load().len();
        let targets = parse_spec(spec, index)?;
        core.append_site(targets, index + 1)?;
        Ok(index)
    }

    /// Remove the site at position `site`; the later sites move up one place. Its endpoints
    /// are never picked again once this returns, and their tasks end.
    ///
    /// # Errors
    ///
    /// [`Error::is_membership`] when there is no such site or it is the only one.
    pub fn remove_site(&self, site: usize) -> Result<Changes, Error> {
        let core = &*self.core;
        let _changing = core.lock_changes();
        let count = core.sites.load().len();
        if site >= count {
            return Err(site_error(site, count));
        }
        if count == 1 {
            return Err(Error::membership(
                "cannot remove the only site: a balancer needs at least one (replace its \
                 endpoints with set_site instead)",
            ));
        }
        Ok(core.drop_site(site))
    }

    /// Make the sites exactly those `specs` name, in order (what the sidecar applies on
    /// SIGHUP): the site at each position gets the endpoints its text names, keeping the state
    /// of those it already had; sites beyond the old count are appended, sites beyond the new
    /// count removed.
    ///
    /// # Errors
    ///
    /// [`Error::is_config`] when a text does not parse (every text is parsed before anything
    /// changes); [`Error::is_membership`] when `specs` is empty.
    pub fn set_sites<I, S>(&self, specs: I) -> Result<Changes, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut wanted = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            wanted.push(parse_spec(spec.as_ref(), i)?);
        }
        if wanted.is_empty() {
            return Err(Error::membership(
                "no site given: a balancer needs at least one",
            ));
        }
        let core = &*self.core;
        let _changing = core.lock_changes();
        let count = wanted.len();
        let sites = core.sites.load_full();
        let mut total = Changes::default();
        for index in (count..sites.len()).rev() {
            total = total.plus(core.drop_site(index));
        }
        for (index, targets) in wanted.into_iter().enumerate() {
            let step = match sites.get(index) {
                Some(s) if index < count => core.reshape(s, targets)?,
                _ => core.append_site(targets, count)?,
            };
            total = total.plus(step);
        }
        Ok(total)
    }

    /// Apply a stream of membership changes (the shape of tower's `Discover`: an endpoint
    /// inserted into a site, or removed) until it ends. A change that is refused (a bad URL, an
    /// unknown endpoint...) is logged and counted, and the following ones still apply; an
    /// error of the stream itself ends the call with that error.
    ///
    /// Run it on a task of its own: `tokio::spawn({ let b = b.clone(); async move { b.follow(s).await } })`.
    pub async fn follow<St, E>(&self, changes: St) -> Result<Followed, E>
    where
        St: Stream<Item = Result<Change, E>>,
    {
        let mut changes = std::pin::pin!(changes);
        let mut done = Followed::default();
        // Bounded by the stream: one step per item.
        while let Some(item) = changes.next().await {
            let result = match item? {
                Change::Insert(url, site) => self.add_endpoint(site, &url),
                Change::Remove(url) => self.remove_endpoint(&url),
            };
            match result {
                Ok(_) => done.applied += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "membership change refused");
                    done.refused += 1;
                }
            }
        }
        Ok(done)
    }

    /// The sites as SITE texts, in order: each member's endpoint as written (user information
    /// included), comma-separated. A balancer built from them, or [`Balancer::set_sites`]
    /// given them, has the same endpoints (a binding rebuilds from them after a `fork`).
    pub fn site_specs(&self) -> Vec<String> {
        self.core
            .sites
            .load()
            .iter()
            .map(|s| {
                let roster = s.lock();
                let texts: Vec<&str> = roster.members.iter().map(|m| m.target.as_str()).collect();
                texts.join(",")
            })
            .collect()
    }

    /// The number of health-probe tasks alive: one per endpoint when probes are on (none when
    /// they are off). A removed endpoint's task ends soon after its removal.
    pub fn probe_tasks(&self) -> usize {
        self.core.probe_tasks.load(Ordering::Acquire)
    }

    /// The number of DNS tasks alive: one per host name fanned out (`rr_dns`).
    pub fn dns_tasks(&self) -> usize {
        self.core.dns_tasks.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::time::Duration;

    use crate::{EndpointState, Outcome};

    fn unprobed(spec: &str) -> Balancer {
        Balancer::builder()
            .site(spec)
            .health_check(false)
            .build()
            .expect("valid balancer")
    }

    fn urls(b: &Balancer) -> Vec<String> {
        b.endpoints().into_iter().map(|e| e.url).collect()
    }

    /// Wait (bounded: 2 s in 10 ms steps) until `done` holds.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn endpoints_that_stay_keep_their_state() {
        let b = unprobed("http://127.0.0.1:{10001...10003}");
        let before = b.endpoints();
        // An outstanding lease on some endpoint, and a request count on each.
        for _ in 0..30 {
            b.pick().expect("pick").finish(Outcome::Status(200));
        }
        let held = b.pick().expect("pick");
        let held_url = held.url().to_string();
        let spec = format!("{held_url},http://127.0.0.1:10004");
        let c = b.set_site(0, &spec).expect("replace the site");
        assert_eq!((c.added, c.removed, c.kept), (1, 2, 1));
        let after = b.endpoints();
        assert_eq!(
            urls(&b),
            vec![held_url.clone(), "http://127.0.0.1:10004".into()]
        );
        let kept = before
            .iter()
            .find(|e| e.url == held_url)
            .expect("was there");
        assert_eq!(after[0].id, kept.id, "the same endpoint, not a new one");
        assert_eq!(after[0].inflight, 1, "its lease is still counted");
        assert!(after[0].requests > 0, "and its history kept");
        assert_eq!(after[1].requests, 0);
        // Probes off: the new endpoint takes traffic at once.
        assert_eq!(after[1].state, EndpointState::Up);
        held.finish(Outcome::Status(200));
        assert_eq!(b.endpoints()[0].inflight, 0);
    }

    #[tokio::test]
    async fn a_removed_endpoint_is_never_picked_and_its_lease_finishes() {
        let b = unprobed("http://127.0.0.1:10011,http://127.0.0.1:10012");
        let mut lease = b.pick().expect("pick");
        while lease.url() != "http://127.0.0.1:10011" {
            lease.finish(Outcome::Status(200));
            lease = b.pick().expect("pick");
        }
        let c = b.remove_endpoint("http://127.0.0.1:10011").expect("remove");
        assert_eq!((c.added, c.removed, c.kept), (0, 1, 1));
        for _ in 0..1000 {
            let l = b.pick().expect("pick");
            assert_eq!(l.url(), "http://127.0.0.1:10012");
            l.finish(Outcome::Status(200));
        }
        // Its lease ends normally, and a failure reported on it changes nothing.
        lease.finish(Outcome::Connect);
        assert_eq!(urls(&b), vec!["http://127.0.0.1:10012".to_string()]);
        assert_eq!(b.endpoints()[0].state, EndpointState::Up);
    }

    #[tokio::test]
    async fn bad_changes_are_refused_by_name_and_change_nothing() {
        let b = unprobed("http://127.0.0.1:10021,http://127.0.0.1:10022");
        let start = urls(&b);
        let e = b.add_endpoint(3, "http://127.0.0.1:1").unwrap_err();
        assert!(
            e.is_membership() && e.to_string().contains("index 3"),
            "{e}"
        );
        let e = b.add_endpoint(0, "http://127.0.0.1:10021/").unwrap_err();
        assert!(
            e.is_membership() && e.to_string().contains("already"),
            "{e}"
        );
        let e = b.add_endpoint(0, "https://127.0.0.1:10023").unwrap_err();
        assert!(e.is_membership() && e.to_string().contains("scheme"), "{e}");
        let e = b.add_endpoint(0, "127.0.0.1:10023").unwrap_err();
        assert!(
            e.is_config() && e.to_string().contains("missing scheme"),
            "{e}"
        );
        let e = b.add_endpoint(0, "http://h{1...2}").unwrap_err();
        assert!(e.is_config() && e.to_string().contains("braces"), "{e}");
        let e = b.remove_endpoint("http://127.0.0.1:9").unwrap_err();
        assert!(
            e.is_membership() && e.to_string().contains("in no site"),
            "{e}"
        );
        b.remove_endpoint("http://127.0.0.1:10021")
            .expect("one left");
        let e = b.remove_endpoint("http://127.0.0.1:10022").unwrap_err();
        assert!(
            e.is_membership() && e.to_string().contains("no endpoint"),
            "{e}"
        );
        let e = b.remove_site(0).unwrap_err();
        assert!(
            e.is_membership() && e.to_string().contains("only site"),
            "{e}"
        );
        let e = b.remove_site(1).unwrap_err();
        assert!(
            e.is_membership() && e.to_string().contains("index 1"),
            "{e}"
        );
        let e = b.set_sites(Vec::<String>::new()).unwrap_err();
        assert!(
            e.is_membership() && e.to_string().contains("at least one"),
            "{e}"
        );
        let e = b.set_site(2, "http://127.0.0.1:1").unwrap_err();
        assert!(e.is_membership(), "{e}");
        let e = b
            .set_sites(["http://127.0.0.1:10022", "http://h:1,"])
            .unwrap_err();
        assert!(e.is_config() && e.to_string().contains("index 1"), "{e}");
        assert_eq!(
            urls(&b),
            start[1..].to_vec(),
            "only the valid removal applied"
        );
        assert_eq!(b.site_count(), 1);
    }

    #[tokio::test]
    async fn sites_come_and_go_and_later_ones_move_up() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let b = Balancer::builder()
            .site("http://127.0.0.1:10031")
            .site("http://127.0.0.1:10032")
            .health_check(false)
            .on_event(move |ev| {
                let line = match ev {
                    Event::Added { endpoint, site } => format!("Added {endpoint} {site}"),
                    Event::Removed { endpoint, site } => format!("Removed {endpoint} {site}"),
                    _ => return,
                };
                log.lock().unwrap().push(line);
            })
            .build()
            .expect("valid");
        assert_eq!(b.add_site("http://127.0.0.1:{10033...10034}").unwrap(), 2);
        assert_eq!(b.site_count(), 3);
        b.remove_site(0).expect("remove the first");
        let sites: Vec<(String, usize)> =
            b.endpoints().into_iter().map(|e| (e.url, e.site)).collect();
        assert_eq!(
            sites,
            vec![
                ("http://127.0.0.1:10032".into(), 0),
                ("http://127.0.0.1:10033".into(), 1),
                ("http://127.0.0.1:10034".into(), 1),
            ]
        );
        assert_eq!(b.pick().unwrap().site(), 0);
        let c = b
            .set_sites([
                "http://127.0.0.1:10032",
                "http://127.0.0.1:10034",
                "http://127.0.0.1:10035",
            ])
            .expect("reshape");
        assert_eq!((c.added, c.removed, c.kept), (1, 1, 2));
        assert_eq!(
            b.site_specs(),
            [
                "http://127.0.0.1:10032",
                "http://127.0.0.1:10034",
                "http://127.0.0.1:10035"
            ]
        );
        b.add_endpoint(1, "http://u:p@127.0.0.1:10037")
            .expect("add");
        assert_eq!(
            b.site_specs()[1],
            "http://127.0.0.1:10034,http://u:p@127.0.0.1:10037"
        );
        let c = b.set_sites(["http://127.0.0.1:10036"]).expect("shrink");
        assert_eq!((c.added, c.removed, c.kept), (1, 4, 0));
        assert_eq!(urls(&b), vec!["http://127.0.0.1:10036".to_string()]);
        let log = seen.lock().unwrap().clone();
        assert!(
            log.contains(&"Added http://127.0.0.1:10033 2".to_string()),
            "{log:?}"
        );
        assert!(
            log.contains(&"Removed http://127.0.0.1:10031 0".to_string()),
            "{log:?}"
        );
        assert!(
            log.contains(&"Added http://127.0.0.1:10035 2".to_string()),
            "{log:?}"
        );
        assert!(
            log.contains(&"Removed http://127.0.0.1:10032 0".to_string()),
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn added_endpoints_wait_for_a_probe_and_removed_ones_stop_probing() {
        let healthy: Arc<Mutex<HashSet<String>>> = Arc::default();
        healthy
            .lock()
            .unwrap()
            .insert("http://127.0.0.1:10041".into());
        let gate = healthy.clone();
        let b = Balancer::builder()
            .site("http://127.0.0.1:10041")
            .health_interval(Duration::from_millis(20))
            .health_jitter(0.0)
            .probe_fn(move |url| {
                let ok = gate.lock().unwrap().contains(&url);
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err("not yet".to_string())
                    }
                }
            })
            .build()
            .expect("valid");
        b.ready(Duration::from_secs(2)).await.expect("ready");
        assert_eq!(b.probe_tasks(), 1);
        b.add_endpoint(0, "http://127.0.0.1:10042").expect("add");
        assert_eq!(b.probe_tasks(), 2);
        // Not in rotation before a probe passes, however long it fails.
        for _ in 0..20 {
            let l = b.pick().expect("pick");
            assert_eq!(l.url(), "http://127.0.0.1:10041");
            l.finish(Outcome::Status(200));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        healthy
            .lock()
            .unwrap()
            .insert("http://127.0.0.1:10042".into());
        until("the added endpoint to come up", || {
            b.endpoints().iter().all(|e| e.state == EndpointState::Up)
        })
        .await;
        b.remove_endpoint("http://127.0.0.1:10041").expect("remove");
        until("the removed endpoint's probe task to end", || {
            b.probe_tasks() == 1
        })
        .await;
        drop(b);
    }

    #[tokio::test]
    async fn a_fanned_out_host_name_follows_its_addresses_and_leaves_whole() {
        let b = Balancer::builder()
            .site("http://127.0.0.1:10051")
            .health_check(false)
            .rr_dns(true)
            .resolver(|_host| async {
                Ok(vec![
                    "127.0.0.2".parse().unwrap(),
                    "127.0.0.3".parse().unwrap(),
                ])
            })
            .build()
            .expect("valid");
        assert_eq!(b.dns_tasks(), 0, "an address is not resolved");
        b.add_endpoint(0, "http://svc.test:10052").expect("add");
        assert_eq!(b.dns_tasks(), 1);
        until("the addresses to join", || b.endpoints().len() == 3).await;
        let e = b.remove_endpoint("http://127.0.0.2:10052").unwrap_err();
        assert!(
            e.is_membership() && e.to_string().contains("host name"),
            "{e}"
        );
        b.remove_endpoint("http://svc.test:10052").expect("remove");
        assert_eq!(urls(&b), vec!["http://127.0.0.1:10051".to_string()]);
        until("the DNS task to end", || b.dns_tasks() == 0).await;
    }

    #[tokio::test]
    async fn a_change_stream_is_applied_in_order() {
        let b = unprobed("http://127.0.0.1:10061");
        let changes = futures_util::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(Change::Insert("http://127.0.0.1:10062".into(), 0)),
            Ok(Change::Insert("not a url".into(), 0)),
            Ok(Change::Remove("http://127.0.0.1:10061".into())),
            Ok(Change::Remove("http://127.0.0.1:10061".into())),
        ]);
        let done = b.follow(changes).await.expect("no stream error");
        assert_eq!((done.applied, done.refused), (2, 2));
        assert_eq!(urls(&b), vec!["http://127.0.0.1:10062".to_string()]);
    }

    #[tokio::test]
    async fn dropping_the_balancer_ends_every_task() {
        let b = Balancer::builder()
            .site("http://127.0.0.1:{10071...10073}")
            .probe_fn(|_| async { Ok(()) })
            .build()
            .expect("valid");
        let counter = b.core.probe_tasks.clone();
        b.add_site("http://127.0.0.1:10074").expect("add");
        assert_eq!(counter.load(Ordering::Acquire), 4);
        drop(b);
        until("every probe task to end", || {
            counter.load(Ordering::Acquire) == 0
        })
        .await;
    }
}
