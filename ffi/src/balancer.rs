//! The balancer handle: construction, picks, readiness, endpoint listing, and its runtime.

use std::ffi::c_char;
use std::future::Future;
use std::time::Duration;

use crate::endpoints::{sidekick_endpoint_list, EndpointList};
use crate::error::{sidekick_error, sidekick_status, Failure};
use crate::ffi::{self, Castable, StrArrayError};
use crate::lease::{sidekick_lease, LeaseObj};
use crate::options::{sidekick_options, Settings};

/// How long `sidekick_balancer_free` waits for the runtime's threads to stop.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// A load balancer over ordered sites of endpoints, with its own runtime threads (health probes,
/// DNS refreshes, the request helper's I/O).
///
/// Made by `sidekick_balancer_new` or `sidekick_balancer_new_from_config`, freed by
/// `sidekick_balancer_free`. Every function that takes a `const sidekick_balancer *` may be called
/// from any number of threads at once.
#[derive(Debug)]
pub struct sidekick_balancer {
    _private: [u8; 0],
}

/// A tokio runtime that shuts down within [`SHUTDOWN_TIMEOUT`] when dropped, from any thread.
#[derive(Debug)]
pub(crate) struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl OwnedRuntime {
    fn start(workers: usize) -> Result<OwnedRuntime, Failure> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("sidekick-rt")
            .on_thread_start(ffi::block_sigpipe)
            .enable_all()
            .build()
            .map(|rt| OwnedRuntime(Some(rt)))
            .map_err(|e| Failure::runtime(format!("could not start the runtime threads: {e}")))
    }

    fn get(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime lives until drop")
    }

    /// Run `fut` to completion on the calling thread, which must not be a runtime thread
    /// (`block_on` there would panic or deadlock).
    pub(crate) fn block_on<F: Future>(&self, fut: F) -> Result<F::Output, Failure> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Failure::runtime(
                "blocking call made from a runtime thread (an event callback?): call it from your own thread",
            ));
        }
        Ok(self.get().block_on(fut))
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Inside a runtime (a callback): waiting here would panic; let it stop on its own.
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(SHUTDOWN_TIMEOUT);
            }
        }
    }
}

/// What a `sidekick_balancer *` points at. Fields drop in order: the client and balancer first,
/// then the runtime their tasks run on.
#[derive(Debug)]
pub(crate) struct BalancerObj {
    pub(crate) client: sidekick::Client,
    pub(crate) runtime: OwnedRuntime,
}

impl Castable for sidekick_balancer {
    type RustType = BalancerObj;
}

impl BalancerObj {
    fn build(settings: Settings) -> Result<BalancerObj, Failure> {
        let runtime = OwnedRuntime::start(settings.worker_threads())?;
        let balancer = settings
            .builder()
            .runtime(runtime.get().handle().clone())
            .build()?;
        let client = sidekick::Client::new(balancer)?;
        Ok(BalancerObj { client, runtime })
    }

    pub(crate) fn balancer(&self) -> &sidekick::Balancer {
        self.client.balancer()
    }
}

pub(crate) fn sites_arg(
    sites: *const *const c_char,
    n_sites: usize,
) -> Result<Vec<String>, Failure> {
    match ffi::try_str_array(sites, n_sites) {
        Ok(v) => Ok(v.into_iter().map(str::to_string).collect()),
        Err(StrArrayError::NullArray) => Err(Failure::null("sites")),
        Err(StrArrayError::NullElement(i)) => Err(Failure::null(&format!("sites[{i}]"))),
        Err(StrArrayError::NotUtf8(i)) => Err(Failure::invalid(format!(
            "argument `sites[{i}]` is not UTF-8"
        ))),
    }
}

fn finish_new(settings: Settings, out: *mut *mut sidekick_balancer) -> Result<(), Failure> {
    let obj = BalancerObj::build(settings)?;
    ffi::write_out(out, ffi::to_boxed_mut_ptr::<sidekick_balancer>(obj));
    Ok(())
}

/// Create a balancer from `n_sites` sites and an options struct, and start its probes.
///
/// - `sites`: sidekick SITE syntax, in order of preference: comma-separated endpoints with
///   optional `{N...M}` ranges, e.g. `"http://10.0.0.{1...4}:9000"`. Traffic goes to the first
///   site with an available endpoint. At least one site is required.
/// - `opts`: NULL for every default, or a struct prepared with `sidekick_options_init`.
/// - `out`: receives the new balancer (written only on success).
///
/// With health probes on (the default) endpoints enter rotation after their first passing probe:
/// call `sidekick_balancer_ready` before the first pick.
///
/// Returns `SIDEKICK_STATUS_CONFIG` for a bad site or option (the error names it),
/// `SIDEKICK_STATUS_NULL_ARGUMENT` for a NULL `out` or site, `SIDEKICK_STATUS_RUNTIME` when the
/// runtime threads cannot start. Ownership: the caller owns `*out` and frees it with
/// `sidekick_balancer_free`; `sites` and `opts` are only read during the call. `*err` (if `err` is
/// not NULL) receives an error object on failure. Threads: any. Panics: `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_balancer_new(
    sites: *const *const c_char,
    n_sites: usize,
    opts: *const sidekick_options,
    out: *mut *mut sidekick_balancer,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    ffi::status_boundary(err, || {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let sites = sites_arg(sites, n_sites)?;
        let defaults = sidekick_options::default();
        let opts = ffi::try_ref_plain(opts).unwrap_or(&defaults);
        let mut settings = Settings::from_options(opts)?;
        settings.sites = sites;
        finish_new(settings, out)
    })
}

/// Create a balancer from sites and a `key=value` config string, and start its probes.
///
/// `config` (NULL: empty) holds `key=value` entries separated by newlines or `;`; blank entries and
/// `#` comments are ignored. The keys are the field names of `sidekick_options` (all but the
/// callback ones), with the same meanings and defaults, plus `site=SPEC`, repeatable, whose sites
/// come after those of `sites`. Values: `*_ms` are whole milliseconds (`attempt_timeout_ms=0` means
/// none); booleans are `true|false|on|off|yes|no|1|0`; status lists are comma-separated statuses or
/// ranges (`eject_statuses=500-599,429`; empty value: empty list). Example:
/// `"site=http://10.0.0.{1...4}:9000; health_path=/minio/health/ready; health_interval_ms=2000"`.
///
/// `sites` may be NULL when `n_sites` is 0. Returns `SIDEKICK_STATUS_CONFIG` for an unknown key or
/// a bad value (the error names both) or a bad site, `SIDEKICK_STATUS_INVALID_ARGUMENT` when
/// `config` is not UTF-8; otherwise as `sidekick_balancer_new` (ownership of `*out`, NULL
/// arguments, threads, panics). `sites` and `config` are only read during the call.
#[no_mangle]
pub extern "C" fn sidekick_balancer_new_from_config(
    sites: *const *const c_char,
    n_sites: usize,
    config: *const c_char,
    out: *mut *mut sidekick_balancer,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    ffi::status_boundary(err, || {
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let mut all = sites_arg(sites, n_sites)?;
        let config = ffi::try_str(config)
            .map_err(|()| Failure::invalid("argument `config` is not UTF-8"))?
            .unwrap_or("");
        let mut settings = Settings::from_config(config)?;
        all.append(&mut settings.sites);
        settings.sites = all;
        finish_new(settings, out)
    })
}

/// Free a balancer: stop its probes and shut its runtime threads down (waiting at most 2 s).
///
/// Ownership: consumes `b`. Leases picked from it stay valid (finish or free them as usual; their
/// reports then no longer matter). NULL: does nothing. Threads: any thread of yours, but only once
/// no other thread uses `b`; never from an event callback (it would not wait for the threads).
/// Panics: never unwinds.
#[no_mangle]
pub extern "C" fn sidekick_balancer_free(b: *mut sidekick_balancer) {
    ffi::boundary(|| drop(ffi::try_take(b)))
}

pub(crate) fn balancer_arg<'a>(b: *const sidekick_balancer) -> Result<&'a BalancerObj, Failure> {
    ffi::try_ref(b).ok_or_else(|| Failure::null("b"))
}

fn pick_into(
    b: *const sidekick_balancer,
    exclude: &[u64],
    out: *mut *mut sidekick_lease,
) -> Result<(), Failure> {
    let obj = balancer_arg(b)?;
    if out.is_null() {
        return Err(Failure::null("out"));
    }
    let lease = obj.balancer().pick_excluding(exclude)?;
    ffi::write_out(
        out,
        ffi::to_boxed_mut_ptr::<sidekick_lease>(LeaseObj::new(lease)),
    );
    Ok(())
}

/// Choose an endpoint for one request: the first site with an available endpoint, and in it the
/// policy's choice. Never blocks and never does I/O.
///
/// Returns `SIDEKICK_STATUS_NO_ENDPOINT` at once when no endpoint is available (nothing is
/// written to `*out`). Ownership: the caller owns `*out` and must end it with exactly one of
/// `sidekick_lease_finish` (report the outcome) or `sidekick_lease_free` (cancelled). NULL:
/// `SIDEKICK_STATUS_NULL_ARGUMENT` for `b` or `out`. Threads: any, concurrently.
/// Panics: `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_balancer_pick(
    b: *const sidekick_balancer,
    out: *mut *mut sidekick_lease,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    ffi::status_boundary(err, || pick_into(b, &[], out))
}

/// Like `sidekick_balancer_pick`, but never one of the `n_exclude` endpoint ids in `exclude`
/// (from `sidekick_lease_id`): to retry a failed request on another endpoint. Falls over to the
/// next site when every available endpoint of a site is excluded.
///
/// `exclude` may be NULL when `n_exclude` is 0, and is only read during the call. Otherwise as
/// `sidekick_balancer_pick`: NULL `b`, `out`, or `exclude` with `n_exclude > 0` give
/// `SIDEKICK_STATUS_NULL_ARGUMENT`; the caller owns `*out`. Threads: any, concurrently.
/// Panics: `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_balancer_pick_excluding(
    b: *const sidekick_balancer,
    exclude: *const u64,
    n_exclude: usize,
    out: *mut *mut sidekick_lease,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    ffi::status_boundary(err, || {
        let exclude = ffi::try_slice(exclude, n_exclude).ok_or_else(|| Failure::null("exclude"))?;
        pick_into(b, exclude, out)
    })
}

/// Block until at least one endpoint is available, at most `timeout_ms` milliseconds.
///
/// Returns `SIDEKICK_STATUS_OK` as soon as one is, `SIDEKICK_STATUS_NOT_READY` after the timeout,
/// `SIDEKICK_STATUS_RUNTIME` when called from a runtime thread (an event callback),
/// `SIDEKICK_STATUS_NULL_ARGUMENT` for a NULL `b`. Threads: any of yours, concurrently; blocks
/// the calling thread. Panics: `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_balancer_ready(
    b: *const sidekick_balancer,
    timeout_ms: u64,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    ffi::status_boundary(err, || {
        let obj = balancer_arg(b)?;
        let wait = obj.balancer().ready(Duration::from_millis(timeout_ms));
        Ok(obj.runtime.block_on(wait)??)
    })
}

/// True when at least one endpoint of some site is available right now.
///
/// NULL: false. Threads: any, concurrently. Panics: false.
#[no_mangle]
pub extern "C" fn sidekick_balancer_is_available(b: *const sidekick_balancer) -> bool {
    ffi::boundary(|| ffi::try_ref(b).is_some_and(|o| o.balancer().is_available()))
}

/// The number of sites.
///
/// NULL: 0. Threads: any, concurrently. Panics: 0.
#[no_mangle]
pub extern "C" fn sidekick_balancer_site_count(b: *const sidekick_balancer) -> usize {
    ffi::boundary(|| ffi::try_ref(b).map_or(0, |o| o.balancer().site_count()))
}

/// A snapshot of every endpoint (state, load, counters), site by site.
///
/// Ownership: the caller owns `*out` (written only on success) and frees it with
/// `sidekick_endpoint_list_free`. NULL: `SIDEKICK_STATUS_NULL_ARGUMENT` for `b` or `out`.
/// Threads: any, concurrently. Panics: `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_balancer_endpoints(
    b: *const sidekick_balancer,
    out: *mut *mut sidekick_endpoint_list,
    err: *mut *mut sidekick_error,
) -> sidekick_status {
    ffi::status_boundary(err, || {
        let obj = balancer_arg(b)?;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let list = EndpointList::new(obj.balancer().endpoints());
        ffi::write_out(out, ffi::to_boxed_mut_ptr::<sidekick_endpoint_list>(list));
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ffi::try_take;
    use std::ptr::null_mut;

    fn new_unprobed() -> *mut sidekick_balancer {
        unprobed(c"http://127.0.0.1:{10001...10002}")
    }

    /// A balancer over one site, `spec`, with probes off (its endpoints start up), built
    /// through the C entry point.
    pub(crate) fn unprobed(spec: &std::ffi::CStr) -> *mut sidekick_balancer {
        let sites = [spec.as_ptr()];
        let mut b = null_mut();
        let st = sidekick_balancer_new_from_config(
            sites.as_ptr(),
            1,
            c"health_check=off; worker_threads=1".as_ptr(),
            &mut b,
            null_mut(),
        );
        assert_eq!(st, sidekick_status::SIDEKICK_STATUS_OK);
        b
    }

    #[test]
    fn runtime_threads_block_sigpipe() {
        let rt = OwnedRuntime::start(1).unwrap();
        let on_worker = rt.get().block_on(async {
            tokio::spawn(async { ffi::sigpipe_blocked() })
                .await
                .unwrap()
        });
        assert!(on_worker, "SIGPIPE is blocked on the runtime's worker");
        let blocking = rt.get().block_on(async {
            tokio::task::spawn_blocking(ffi::sigpipe_blocked)
                .await
                .unwrap()
        });
        assert!(blocking, "and on its blocking threads");
    }

    #[test]
    fn blocking_calls_from_a_runtime_thread_fail_cleanly() {
        let b = new_unprobed();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut err: *mut sidekick_error = null_mut();
        let st = rt.block_on(async { sidekick_balancer_ready(b, 10, &mut err) });
        assert_eq!(st, sidekick_status::SIDEKICK_STATUS_RUNTIME);
        let e = try_take(err).expect("an error object");
        assert!(e.message().contains("runtime thread"), "{}", e.message());
        // Outside a runtime the same call works.
        assert_eq!(
            sidekick_balancer_ready(b, 10, null_mut()),
            sidekick_status::SIDEKICK_STATUS_OK
        );
        // Freeing from inside a runtime must neither panic nor block: the threads stop in the
        // background.
        rt.block_on(async { sidekick_balancer_free(b) });
    }

    #[test]
    fn concurrent_picks_and_free_from_another_thread() {
        let b = new_unprobed() as usize; // raw pointers are not Send; the C contract is
        let workers: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let mut lease = null_mut();
                        let st = sidekick_balancer_pick(
                            b as *const sidekick_balancer,
                            &mut lease,
                            null_mut(),
                        );
                        assert_eq!(st, sidekick_status::SIDEKICK_STATUS_OK);
                        assert_eq!(
                            crate::lease::sidekick_lease_finish(
                                lease,
                                crate::SIDEKICK_OUTCOME_SUCCESS,
                                0,
                                0
                            ),
                            sidekick_status::SIDEKICK_STATUS_OK
                        );
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        std::thread::spawn(move || sidekick_balancer_free(b as *mut sidekick_balancer))
            .join()
            .unwrap();
    }
}
