//! The fence around the C API: every `unsafe` operation of the crate is in this module.
//!
//! - Handles: a C handle type (`sidekick_lease`, ...) is an opaque marker; [`Castable`] names the
//!   Rust type a pointer to it really points at. Handles are made by [`to_boxed_mut_ptr`], borrowed
//!   with [`try_ref`] and consumed with [`try_take`]: every handle of this library is a `Box`.
//! - Inputs: [`try_str`], [`try_slice`] and [`try_str_array`] read C strings and arrays; all of them
//!   turn NULL into `None` instead of dereferencing it.
//! - Outputs: [`write_out`] stores a value through an out-pointer the caller checked for NULL.
//! - Callbacks: [`EventSink`] carries the user's function pointer and `user_data` across threads.
//! - Panics: [`status_boundary`] and [`boundary`] wrap every exported body in `catch_unwind`.
//! - Signals: [`block_sigpipe`] keeps the runtime's socket writes from killing the host process.
//!
//! The helpers are safe functions that take raw pointers: what makes them sound is the contract
//! of the C API (documented in the header and README): a non-NULL handle was made by this library
//! and not yet freed; strings are NUL-terminated; arrays hold as many elements as their length
//! says; out-pointers point to writable memory. C callers are the only callers.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{sidekick_error, sidekick_status, ErrorObj, Failure};
use crate::event::sidekick_event;

/// Links a C handle type to the Rust type its pointers point at (always through a `Box`).
pub(crate) trait Castable {
    /// What a `*const Self` really points at.
    type RustType;
}

/// Move `value` to the heap and hand its ownership to C as a handle.
pub(crate) fn to_boxed_mut_ptr<C: Castable>(value: C::RustType) -> *mut C {
    Box::into_raw(Box::new(value)).cast()
}

/// Borrow the value behind a handle; `None` for NULL.
///
/// ## Unsafety
/// A non-NULL `ptr` must come from [`to_boxed_mut_ptr`] for the same `C` and not be freed yet, and
/// the borrow must not outlive the handle: the C contract ("valid until freed") guarantees both for
/// the duration of the exported call that received `ptr`.
pub(crate) fn try_ref<'a, C: Castable>(ptr: *const C) -> Option<&'a C::RustType> {
    // SAFETY: per the contract above, a non-NULL pointer points at a live, aligned
    // `C::RustType` allocated by `Box`; `as_ref` returns `None` for NULL.
    unsafe { ptr.cast::<C::RustType>().as_ref() }
}

/// Borrow the value behind a handle mutably; `None` for NULL.
///
/// ## Unsafety
/// As [`try_ref`], and no other reference to the value may exist during the call: the C contract
/// says such a handle is used by one thread at a time.
pub(crate) fn try_mut<'a, C: Castable>(ptr: *mut C) -> Option<&'a mut C::RustType> {
    // SAFETY: per the contract above, a non-NULL pointer points at a live, aligned
    // `C::RustType` allocated by `Box` and used by this call alone; `as_mut` returns `None` for NULL.
    unsafe { ptr.cast::<C::RustType>().as_mut() }
}

/// Borrow a plain `#[repr(C)]` struct the caller passed by pointer; `None` for NULL.
///
/// ## Unsafety
/// A non-NULL `ptr` must point at an initialised, aligned `T` that stays unchanged during the call
/// (for `bool` fields: holding 0 or 1, as C's `bool` does).
pub(crate) fn try_ref_plain<'a, T>(ptr: *const T) -> Option<&'a T> {
    // SAFETY: per the contract above; `as_ref` returns `None` for NULL.
    unsafe { ptr.as_ref() }
}

/// Take back ownership of the value behind a handle (to free or consume it); `None` for NULL.
///
/// ## Unsafety
/// A non-NULL `ptr` must come from [`to_boxed_mut_ptr`] for the same `C` and must not be used
/// again by the caller afterwards (the C API documents every consuming function as such).
pub(crate) fn try_take<C: Castable>(ptr: *mut C) -> Option<Box<C::RustType>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: per the contract above, `ptr` is the unique owner of a `Box<C::RustType>` made by
    // `to_boxed_mut_ptr`; the C side gives that ownership up with this call.
    Some(unsafe { Box::from_raw(ptr.cast::<C::RustType>()) })
}

/// Store `value` through an out-pointer.
///
/// ## Unsafety
/// `out` must be non-NULL (callers check it before doing any work, so that outputs are written only
/// on success), aligned and writable; whatever it pointed at is overwritten without being dropped,
/// which is right for the plain C values (pointers, integers) written here.
pub(crate) fn write_out<T: Copy>(out: *mut T, value: T) {
    debug_assert!(!out.is_null());
    // SAFETY: per the contract above; `T: Copy` means no destructor is skipped.
    unsafe { out.write(value) }
}

/// A C string as `&str`: `Ok(None)` for NULL, `Err(())` when it is not UTF-8.
///
/// ## Unsafety
/// A non-NULL `ptr` must point at a NUL-terminated string that stays unchanged during the call.
pub(crate) fn try_str<'a>(ptr: *const c_char) -> Result<Option<&'a str>, ()> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: per the contract above, `ptr` is a valid NUL-terminated string.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map(Some).map_err(|_| ())
}

/// A C array as a slice: an empty slice when `len` is 0 (whatever `ptr` is), `None` when `ptr` is
/// NULL with a non-zero `len`.
///
/// ## Unsafety
/// A non-NULL `ptr` must point at `len` initialised, aligned `T`s that stay unchanged during the call.
pub(crate) fn try_slice<'a, T>(ptr: *const T, len: usize) -> Option<&'a [T]> {
    if len == 0 {
        return Some(&[]);
    }
    if ptr.is_null() {
        return None;
    }
    // SAFETY: per the contract above; `len > 0` and `ptr` is non-NULL.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Why an array of C strings could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StrArrayError {
    /// The array pointer is NULL but the length is not 0.
    NullArray,
    /// Element `i` is NULL.
    NullElement(usize),
    /// Element `i` is not UTF-8.
    NotUtf8(usize),
}

/// An array of `len` C strings (`const char *const *`) as `Vec<&str>`.
///
/// ## Unsafety
/// As [`try_slice`] for the array, and as [`try_str`] for each of its elements.
pub(crate) fn try_str_array<'a>(
    ptr: *const *const c_char,
    len: usize,
) -> Result<Vec<&'a str>, StrArrayError> {
    let items = try_slice(ptr, len).ok_or(StrArrayError::NullArray)?;
    items
        .iter()
        .enumerate()
        .map(|(i, p)| match try_str(*p) {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(StrArrayError::NullElement(i)),
            Err(()) => Err(StrArrayError::NotUtf8(i)),
        })
        .collect()
}

/// The user's event callback and its `user_data`, callable from any thread.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EventSink {
    callback: unsafe extern "C" fn(*mut c_void, *const sidekick_event),
    user_data: *mut c_void,
}

// SAFETY: the header requires the callback to be callable from any thread, concurrently, and
// `user_data` to stay valid (and safe to use from those threads) until the balancer and all its
// leases are freed. The pointer itself is only passed back, never dereferenced here.
unsafe impl Send for EventSink {}
// SAFETY: as for `Send`: sharing the sink only lets several threads call the callback at once,
// which the header allows.
unsafe impl Sync for EventSink {}

impl EventSink {
    /// `None` when no callback was set.
    pub(crate) fn new(
        callback: Option<unsafe extern "C" fn(*mut c_void, *const sidekick_event)>,
        user_data: *mut c_void,
    ) -> Option<EventSink> {
        callback.map(|callback| EventSink {
            callback,
            user_data,
        })
    }

    /// Call the callback with one event; the event's strings live until it returns.
    pub(crate) fn deliver(&self, event: &sidekick_event) {
        // SAFETY: the callback was given by the user for exactly this signature; the event pointer
        // is valid for the duration of the call, as the header promises, and `user_data` is the
        // user's own pointer handed back unchanged.
        unsafe { (self.callback)(self.user_data, event) }
    }
}

/// Block `SIGPIPE` on the calling thread; run at the start of every runtime thread.
///
/// hyper writes with `writev`, which raises `SIGPIPE` when the peer has closed the connection. A
/// Rust program ignores the signal, but this library runs inside C, Go and JVM processes: a C
/// program that does not ignore it would be killed, and Go forwards a `SIGPIPE` raised on a
/// non-Go thread to the default action (termination). With the signal blocked on the threads that
/// do the socket I/O, the write fails with `EPIPE` and the connection is dropped as broken.
pub(crate) fn block_sigpipe() {
    // SAFETY: `sigemptyset`, `sigaddset` and `pthread_sigmask` only touch the local set and the
    // calling thread's signal mask; SIGPIPE may be blocked without undefined behaviour.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Whether `SIGPIPE` is blocked on the calling thread (for tests).
#[cfg(test)]
pub(crate) fn sigpipe_blocked() -> bool {
    // SAFETY: reads the calling thread's signal mask into a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set);
        libc::sigismember(&set, libc::SIGPIPE) == 1
    }
}

/// Run the body of a status-returning export: `Ok` gives `SIDEKICK_STATUS_OK`; a failure or a
/// panic gives its status and, when `err` is not NULL, a new `sidekick_error` written to `*err`.
/// `*err` is written only on failure.
///
/// ## Unsafety
/// A non-NULL `err` must be writable (see [`write_out`]).
pub(crate) fn status_boundary(
    err: *mut *mut sidekick_error,
    body: impl FnOnce() -> Result<(), Failure>,
) -> sidekick_status {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return sidekick_status::SIDEKICK_STATUS_OK,
        Ok(Err(failure)) => failure,
        Err(payload) => Failure::panic(payload.as_ref()),
    };
    let status = failure.status;
    if !err.is_null() {
        // Building the error object allocates and formats: keep it inside a boundary too.
        if let Ok(obj) = catch_unwind(AssertUnwindSafe(|| ErrorObj::from(failure))) {
            write_out(err, to_boxed_mut_ptr::<sidekick_error>(obj));
        }
    }
    status
}

/// What an export that returns a plain value gives back when its body panicked.
pub(crate) trait OnPanic {
    /// NULL, 0, `false` or nothing.
    fn on_panic() -> Self;
}

impl<T> OnPanic for *const T {
    fn on_panic() -> Self {
        std::ptr::null()
    }
}

macro_rules! on_panic_zero {
    ($($t:ty),*) => { $(impl OnPanic for $t { fn on_panic() -> Self { Default::default() } })* };
}
on_panic_zero!((), bool, u16, u32, u64, i64, usize);

/// Run the body of an export that returns a plain value; a panic gives [`OnPanic::on_panic`].
pub(crate) fn boundary<T: OnPanic>(body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| T::on_panic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_helpers_handle_null_and_bad_utf8() {
        assert_eq!(try_str(std::ptr::null()), Ok(None));
        assert_eq!(try_str(c"abc".as_ptr()), Ok(Some("abc")));
        let bad = [0xffu8 as c_char, 0];
        assert_eq!(try_str(bad.as_ptr()), Err(()));
        let arr = [c"a".as_ptr(), std::ptr::null()];
        assert_eq!(
            try_str_array(arr.as_ptr(), 2),
            Err(StrArrayError::NullElement(1))
        );
        assert_eq!(try_str_array(arr.as_ptr(), 1), Ok(vec!["a"]));
        assert_eq!(
            try_str_array(std::ptr::null(), 3),
            Err(StrArrayError::NullArray)
        );
        assert_eq!(try_str_array(std::ptr::null(), 0), Ok(vec![]));
    }

    #[test]
    fn slices_handle_null() {
        assert_eq!(try_slice::<u16>(std::ptr::null(), 0), Some(&[][..]));
        assert_eq!(try_slice::<u16>(std::ptr::null(), 2), None);
        let v = [1u16, 2];
        assert_eq!(try_slice(v.as_ptr(), 2), Some(&v[..]));
    }

    #[test]
    fn panics_become_a_status_and_an_error() {
        let mut err: *mut sidekick_error = std::ptr::null_mut();
        let st = status_boundary(&mut err, || panic!("boom {}", 42));
        assert_eq!(st, sidekick_status::SIDEKICK_STATUS_PANIC);
        let obj = try_take(err).expect("an error object");
        assert!(obj.message().contains("boom 42"), "{}", obj.message());
        assert_eq!(boundary::<usize>(|| panic!("x")), 0);
        assert!(boundary::<*const c_char>(|| panic!("x")).is_null());
    }

    #[test]
    fn errors_are_written_only_on_failure() {
        let sentinel = std::ptr::dangling_mut::<sidekick_error>();
        let mut err = sentinel;
        assert_eq!(
            status_boundary(&mut err, || Ok(())),
            sidekick_status::SIDEKICK_STATUS_OK
        );
        assert_eq!(err, sentinel);
        // NULL `err` is allowed: the status alone comes back.
        let st = status_boundary(std::ptr::null_mut(), || Err(Failure::null("x")));
        assert_eq!(st, sidekick_status::SIDEKICK_STATUS_NULL_ARGUMENT);
    }
}
