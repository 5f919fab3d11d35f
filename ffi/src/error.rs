//! Status codes and the owned error object.

use std::any::Any;
use std::ffi::{c_char, c_int, CString};

use crate::ffi::{self, Castable};

/// The result of every fallible function. `SIDEKICK_STATUS_OK` (0) is success; any other value is
/// a failure, and the function's `sidekick_error **err` out-parameter (when not NULL) then receives
/// an error object with the details.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sidekick_status {
    /// Success.
    SIDEKICK_STATUS_OK = 0,
    /// A required pointer argument was NULL (the message names it).
    SIDEKICK_STATUS_NULL_ARGUMENT = 1,
    /// An argument was out of range or malformed: an unknown outcome, a status outside 100-599, a
    /// string that is not UTF-8, a bad method or header (the message says which).
    SIDEKICK_STATUS_INVALID_ARGUMENT = 2,
    /// The configuration was rejected: a bad site, an unknown option, a bad value (the message
    /// names the key or field and the value).
    SIDEKICK_STATUS_CONFIG = 3,
    /// No endpoint of any site is available: nothing was picked or sent.
    SIDEKICK_STATUS_NO_ENDPOINT = 4,
    /// `sidekick_balancer_ready` gave up before any endpoint became available.
    SIDEKICK_STATUS_NOT_READY = 5,
    /// Request helper: the last attempt could not connect (nothing reached a backend).
    SIDEKICK_STATUS_CONNECT = 6,
    /// Request helper: no response in time (the attempt timeout or the call's `timeout_ms`).
    SIDEKICK_STATUS_TIMEOUT = 7,
    /// Request helper: the request failed after it may have reached a backend.
    SIDEKICK_STATUS_REQUEST = 8,
    /// Request helper: the request or response body could not be transferred.
    SIDEKICK_STATUS_BODY = 9,
    /// The runtime could not be started, or a blocking call was made from one of the balancer's
    /// own runtime threads (e.g. from an event callback), where it would deadlock.
    SIDEKICK_STATUS_RUNTIME = 10,
    /// A bug: a Rust panic was caught at the boundary. The call had no effect on its outputs; the
    /// handles it was given stay valid.
    SIDEKICK_STATUS_PANIC = 99,
}

impl sidekick_status {
    fn describe(self) -> &'static std::ffi::CStr {
        use sidekick_status::*;
        match self {
            SIDEKICK_STATUS_OK => c"ok",
            SIDEKICK_STATUS_NULL_ARGUMENT => c"a required argument is NULL",
            SIDEKICK_STATUS_INVALID_ARGUMENT => c"invalid argument",
            SIDEKICK_STATUS_CONFIG => c"invalid configuration",
            SIDEKICK_STATUS_NO_ENDPOINT => c"no endpoint available",
            SIDEKICK_STATUS_NOT_READY => c"no endpoint became available in time",
            SIDEKICK_STATUS_CONNECT => c"could not connect to an endpoint",
            SIDEKICK_STATUS_TIMEOUT => c"timed out",
            SIDEKICK_STATUS_REQUEST => c"request failed",
            SIDEKICK_STATUS_BODY => c"body transfer failed",
            SIDEKICK_STATUS_RUNTIME => c"runtime error",
            SIDEKICK_STATUS_PANIC => c"internal error (panic)",
        }
    }

    fn from_c_int(v: c_int) -> Option<sidekick_status> {
        use sidekick_status::*;
        [
            SIDEKICK_STATUS_OK,
            SIDEKICK_STATUS_NULL_ARGUMENT,
            SIDEKICK_STATUS_INVALID_ARGUMENT,
            SIDEKICK_STATUS_CONFIG,
            SIDEKICK_STATUS_NO_ENDPOINT,
            SIDEKICK_STATUS_NOT_READY,
            SIDEKICK_STATUS_CONNECT,
            SIDEKICK_STATUS_TIMEOUT,
            SIDEKICK_STATUS_REQUEST,
            SIDEKICK_STATUS_BODY,
            SIDEKICK_STATUS_RUNTIME,
            SIDEKICK_STATUS_PANIC,
        ]
        .into_iter()
        .find(|s| *s as c_int == v)
    }
}

/// A failure on its way out of an exported function.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: sidekick_status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: sidekick_status, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    /// `name` (an argument) is NULL.
    pub(crate) fn null(name: &str) -> Failure {
        Failure::new(
            sidekick_status::SIDEKICK_STATUS_NULL_ARGUMENT,
            format!("argument `{name}` is NULL"),
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(sidekick_status::SIDEKICK_STATUS_INVALID_ARGUMENT, message)
    }

    pub(crate) fn config(message: impl Into<String>) -> Failure {
        Failure::new(
            sidekick_status::SIDEKICK_STATUS_CONFIG,
            format!("invalid configuration: {}", message.into()),
        )
    }

    pub(crate) fn runtime(message: impl Into<String>) -> Failure {
        Failure::new(sidekick_status::SIDEKICK_STATUS_RUNTIME, message)
    }

    pub(crate) fn panic(payload: &(dyn Any + Send)) -> Failure {
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("unknown payload");
        Failure::new(
            sidekick_status::SIDEKICK_STATUS_PANIC,
            format!("internal error: a panic was caught at the C boundary: {what}"),
        )
    }
}

impl From<sidekick::Error> for Failure {
    fn from(e: sidekick::Error) -> Failure {
        use sidekick_status::*;
        let status = if e.is_config() {
            SIDEKICK_STATUS_CONFIG
        } else if e.is_no_endpoint() {
            SIDEKICK_STATUS_NO_ENDPOINT
        } else if e.is_not_ready() {
            SIDEKICK_STATUS_NOT_READY
        } else if e.is_connect() {
            SIDEKICK_STATUS_CONNECT
        } else if e.is_timeout() {
            SIDEKICK_STATUS_TIMEOUT
        } else if e.is_body() {
            SIDEKICK_STATUS_BODY
        } else if e.is_membership() {
            SIDEKICK_STATUS_INVALID_ARGUMENT
        } else {
            SIDEKICK_STATUS_REQUEST
        };
        // The whole chain: "could not connect to endpoint (http://..): tcp connect error: ...".
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        Failure::new(status, message)
    }
}

/// A C string from any text: interior NUL bytes (which C cannot represent) become U+FFFD.
pub(crate) fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

/// Details of a failed call: its status and a human-readable message.
///
/// Returned through the `sidekick_error **err` out-parameter of fallible functions (written only
/// when the call fails, and only when `err` is not NULL). Owned by the caller: free it with
/// `sidekick_error_free`. Immutable: its accessors may be called from any thread at once.
#[derive(Debug)]
pub struct sidekick_error {
    _private: [u8; 0],
}

#[derive(Debug)]
pub(crate) struct ErrorObj {
    status: sidekick_status,
    message: CString,
}

impl ErrorObj {
    #[cfg(test)]
    pub(crate) fn message(&self) -> &str {
        self.message.to_str().unwrap_or("")
    }
}

impl From<Failure> for ErrorObj {
    fn from(f: Failure) -> ErrorObj {
        ErrorObj {
            status: f.status,
            message: c_string(&f.message),
        }
    }
}

impl ffi::OnPanic for sidekick_status {
    fn on_panic() -> Self {
        sidekick_status::SIDEKICK_STATUS_PANIC
    }
}

impl Castable for sidekick_error {
    type RustType = ErrorObj;
}

/// The error's message (UTF-8, NUL-terminated), e.g. `invalid configuration: option
/// "health_interval_ms": "abc" is not a whole number`.
///
/// Ownership: borrowed from `err`; valid until `sidekick_error_free(err)`.
/// NULL: returns NULL when `err` is NULL. Threads: any. Panics: returns NULL.
#[no_mangle]
pub extern "C" fn sidekick_error_message(err: *const sidekick_error) -> *const c_char {
    ffi::boundary(|| match ffi::try_ref(err) {
        Some(e) => e.message.as_ptr(),
        None => std::ptr::null(),
    })
}

/// The status of the call that produced `err` (never `SIDEKICK_STATUS_OK` for a real error).
///
/// NULL: returns `SIDEKICK_STATUS_NULL_ARGUMENT` when `err` is NULL. Threads: any.
/// Panics: returns `SIDEKICK_STATUS_PANIC`.
#[no_mangle]
pub extern "C" fn sidekick_error_status(err: *const sidekick_error) -> sidekick_status {
    ffi::boundary(|| match ffi::try_ref(err) {
        Some(e) => e.status,
        None => sidekick_status::SIDEKICK_STATUS_NULL_ARGUMENT,
    })
}

/// Free an error object.
///
/// Ownership: consumes `err`; it must not be used afterwards. NULL: does nothing. Threads: any
/// thread, but not while another thread still reads the error. Panics: never unwinds.
#[no_mangle]
pub extern "C" fn sidekick_error_free(err: *mut sidekick_error) {
    ffi::boundary(|| drop(ffi::try_take(err)))
}

/// A short static description of a status code, e.g. `"no endpoint available"`; unknown values
/// give `"unknown status"`.
///
/// Ownership: static, never free it. Threads: any. Panics: returns NULL.
#[no_mangle]
pub extern "C" fn sidekick_status_str(status: c_int) -> *const c_char {
    ffi::boundary(|| match sidekick_status::from_c_int(status) {
        Some(s) => s.describe().as_ptr(),
        None => c"unknown status".as_ptr(),
    })
}
