//! Live membership from C: endpoints and sites of a running balancer added, removed and
//! replaced (the engine's `sidekick::membership`), and the count of live probe tasks.
//!
//! Every function here may be called from any thread while other threads pick: a pick never
//! waits for a change. Endpoints that stay keep their state; a removed endpoint is never picked
//! once the call returns (its outstanding leases finish normally); an added one is probed before
//! it takes traffic when health checks are on.

use std::ffi::c_char;

use crate::balancer::{balancer_arg, sidekick_balancer, sites_arg};
use crate::error::{sidekick_error, sidekick_status, Failure};
use crate::ffi;

/// Apply `change` to the balancer `b` inside the C boundary (NULL `b`, errors, panics).
fn apply(
    b: *const sidekick_balancer,
    err: *mut *mut sidekick_error,
    change: impl FnOnce(&sidekick::Balancer) -> Result<(), Failure>,
) -> sidekick_status {
    ffi::status_boundary(err, || change(balancer_arg(b)?.balancer()))
}

/// `name` as a required UTF-8 string argument.
fn text_arg<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Failure> {
    ffi::try_str(ptr)
        .map_err(|()| Failure::invalid(format!("argument `{name}` is not UTF-8")))?
        .ok_or_else(|| Failure::null(name))
}

/// Add the endpoint `url` (e.g. `"http://10.0.0.5:9000"`, no `{N...M}` range) to the site at
/// position `site` (0 for the first). With health checks on it takes traffic after its first
/// passing probe; with them off, at once.
///
/// Returns `SIDEKICK_STATUS_CONFIG` when `url` is not a valid endpoint,
/// `SIDEKICK_STATUS_INVALID_ARGUMENT` when there is no such site, the site already has the
/// endpoint or uses another scheme (the error names it; nothing changed),
/// `SIDEKICK_STATUS_NULL_ARGUMENT` for a NULL `b` or `url`. `url` is only read during the call.
/// Threads: any, concurrently with picks. Panics: `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_balancer_add_endpoint(
    b: *const sidekick_balancer,
    site: usize,
    url: *const c_char,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    apply(b, err, |bal| {
        bal.add_endpoint(site, text_arg(url, "url")?)?;
        Ok(())
    })
}

/// Remove the endpoint `url` (as added, or as `sidekick_endpoint_list_url` shows it) from every
/// site that has it. It is never picked again once this returns; leases already picked from it
/// stay valid (finish them as usual); its probe task ends.
///
/// Returns `SIDEKICK_STATUS_INVALID_ARGUMENT` when no site has it or when it is the last
/// endpoint of its site (remove the site or replace its endpoints instead), and
/// `SIDEKICK_STATUS_CONFIG` when `url` does not parse; nothing changed then. NULL `b` or `url`:
/// `SIDEKICK_STATUS_NULL_ARGUMENT`. Threads: any, concurrently with picks. Panics:
/// `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_balancer_remove_endpoint(
    b: *const sidekick_balancer,
    url: *const c_char,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    apply(b, err, |bal| {
        bal.remove_endpoint(text_arg(url, "url")?)?;
        Ok(())
    })
}

/// Replace the endpoints of the site at position `site` by those `spec` names (SITE syntax,
/// e.g. `"http://10.0.0.{1...4}:9000"`): endpoints named before and after keep their state, the
/// others leave or join. `site` equal to `sidekick_balancer_site_count(b)` appends a site.
///
/// Returns `SIDEKICK_STATUS_CONFIG` for a bad `spec`, `SIDEKICK_STATUS_INVALID_ARGUMENT` when
/// `site` is beyond the end (nothing changed), `SIDEKICK_STATUS_NULL_ARGUMENT` for a NULL `b` or
/// `spec`. Threads: any, concurrently with picks. Panics: `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_balancer_set_site(
    b: *const sidekick_balancer,
    site: usize,
    spec: *const c_char,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    apply(b, err, |bal| {
        bal.set_site(site, text_arg(spec, "spec")?)?;
        Ok(())
    })
}

/// Remove the site at position `site`; later sites move up one place.
///
/// Returns `SIDEKICK_STATUS_INVALID_ARGUMENT` when there is no such site or it is the only one
/// (nothing changed), `SIDEKICK_STATUS_NULL_ARGUMENT` for a NULL `b`. Threads: any,
/// concurrently with picks. Panics: `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_balancer_remove_site(
    b: *const sidekick_balancer,
    site: usize,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    apply(b, err, |bal| {
        bal.remove_site(site)?;
        Ok(())
    })
}

/// Make the sites exactly the `n_sites` texts of `sites` (SITE syntax, in order): the site at
/// each position gets the endpoints its text names, keeping the state of those it had; extra
/// sites are appended or removed.
///
/// Returns `SIDEKICK_STATUS_CONFIG` for a bad text (every text is checked before anything
/// changes), `SIDEKICK_STATUS_INVALID_ARGUMENT` when `n_sites` is 0,
/// `SIDEKICK_STATUS_NULL_ARGUMENT` for a NULL `b`, `sites` or element. `sites` is only read
/// during the call. Threads: any, concurrently with picks. Panics: `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_balancer_set_sites(
    b: *const sidekick_balancer,
    sites: *const *const c_char,
    n_sites: usize,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    apply(b, err, |bal| {
        bal.set_sites(sites_arg(sites, n_sites)?)?;
        Ok(())
    })
}

/// The number of health-probe tasks alive: one per endpoint with health checks on, 0 with them
/// off. A removed endpoint's task ends shortly after its removal.
///
/// NULL: 0. Threads: any, concurrently. Panics: 0.
#[no_mangle]
pub extern "C" fn sidekick_balancer_probe_tasks(b: *const sidekick_balancer) -> usize {
    ffi::boundary(|| ffi::try_ref(b).map_or(0, |o| o.balancer().probe_tasks()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr::null_mut;

    use crate::balancer::sidekick_balancer_free;
    use crate::endpoints::{
        sidekick_endpoint_list_count, sidekick_endpoint_list_free, sidekick_endpoint_list_url,
    };
    use crate::ffi::try_take;

    fn urls(b: *const sidekick_balancer) -> Vec<String> {
        let mut list = null_mut();
        assert_eq!(
            crate::balancer::sidekick_balancer_endpoints(b, &mut list, null_mut()),
            sidekick_status::SIDEKICK_STATUS_OK
        );
        let n = sidekick_endpoint_list_count(list);
        let out = (0..n)
            .map(|i| {
                ffi::try_str(sidekick_endpoint_list_url(list, i))
                    .ok()
                    .flatten()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        sidekick_endpoint_list_free(list);
        out
    }

    fn status_and_message(
        f: impl FnOnce(*mut *mut sidekick_error) -> sidekick_status,
    ) -> (sidekick_status, String) {
        let mut err = null_mut();
        let st = f(&mut err);
        let msg = try_take(err).map_or(String::new(), |e| e.message().to_string());
        (st, msg)
    }

    #[test]
    fn changes_and_refusals_through_the_c_functions() {
        use sidekick_status::*;
        let b = crate::balancer::tests::unprobed(c"http://127.0.0.1:10101");
        let add = |url: &std::ffi::CStr| {
            status_and_message(|e| sidekick_balancer_add_endpoint(b, 0, url.as_ptr(), e))
        };
        assert_eq!(add(c"http://127.0.0.1:10102").0, SIDEKICK_STATUS_OK);
        let (st, msg) = add(c"http://127.0.0.1:10102");
        assert_eq!(st, SIDEKICK_STATUS_INVALID_ARGUMENT);
        assert!(msg.contains("already"), "{msg}");
        assert_eq!(add(c"nope").0, SIDEKICK_STATUS_CONFIG);
        let (st, msg) =
            status_and_message(|e| sidekick_balancer_add_endpoint(b, 0, std::ptr::null(), e));
        assert_eq!(st, SIDEKICK_STATUS_NULL_ARGUMENT, "{msg}");
        assert_eq!(
            urls(b),
            vec!["http://127.0.0.1:10101", "http://127.0.0.1:10102"]
        );
        let st =
            sidekick_balancer_remove_endpoint(b, c"http://127.0.0.1:10101".as_ptr(), null_mut());
        assert_eq!(st, SIDEKICK_STATUS_OK);
        let (st, msg) = status_and_message(|e| {
            sidekick_balancer_remove_endpoint(b, c"http://127.0.0.1:10102".as_ptr(), e)
        });
        assert_eq!(st, SIDEKICK_STATUS_INVALID_ARGUMENT);
        assert!(msg.contains("no endpoint"), "{msg}");
        let two = [
            c"http://127.0.0.1:10102,http://127.0.0.1:10103".as_ptr(),
            c"http://127.0.0.1:10104".as_ptr(),
        ];
        assert_eq!(
            sidekick_balancer_set_sites(b, two.as_ptr(), 2, null_mut()),
            SIDEKICK_STATUS_OK
        );
        assert_eq!(crate::balancer::sidekick_balancer_site_count(b), 2);
        assert_eq!(
            sidekick_balancer_set_site(b, 2, c"http://127.0.0.1:10105".as_ptr(), null_mut()),
            SIDEKICK_STATUS_OK
        );
        assert_eq!(
            sidekick_balancer_remove_site(b, 0, null_mut()),
            SIDEKICK_STATUS_OK
        );
        assert_eq!(
            urls(b),
            vec!["http://127.0.0.1:10104", "http://127.0.0.1:10105"]
        );
        assert_eq!(
            sidekick_balancer_set_sites(b, two.as_ptr(), 0, null_mut()),
            SIDEKICK_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(sidekick_balancer_probe_tasks(b), 0, "health checks are off");
        assert_eq!(sidekick_balancer_probe_tasks(std::ptr::null()), 0);
        sidekick_balancer_free(b);
    }
}
