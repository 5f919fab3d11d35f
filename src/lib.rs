//! # sidekick — a client-side HTTP load balancer
//!
//! Every client process embeds its own small balancer: no central load balancer to bottleneck or
//! fail, no DNS failover to wait for. Endpoints are grouped in ordered **sites** (MinIO sidekick's
//! `SITE` syntax, `http://minio{1...4}:9000`); active **health probes** and **passive ejection**
//! keep dead endpoints out of rotation; traffic **fails over** to the next site when a site has
//! no endpoint left, and comes back when it recovers; inside a site the **power of two choices**
//! over a peak-EWMA load score sends each request to a lightly loaded, fast endpoint; failed
//! requests are **retried on another endpoint** within a retry budget.
//!
//! The engine is [`Balancer`]: pick an endpoint, send, report the [`Outcome`]. On top of it:
//!
//! - `service` (feature `tower`): a tower [`Layer`](service::SidekickLayer) that balances any
//!   `Service<http::Request<B>>`, such as hyper-util's client, with retries and body replay;
//! - `Client` (feature `client`): hyper-util + rustls + the layer, ready to use.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sidekick::Error> {
//! use std::time::Duration;
//! use sidekick::{Balancer, Outcome};
//!
//! let balancer = Balancer::builder()
//!     .site("http://127.0.0.1:{9001...9004}")
//!     .site("http://127.0.0.2:{9001...9004}")
//!     .health_path("/minio/health/ready")
//!     .build()?;
//! balancer.ready(Duration::from_secs(5)).await?;
//!
//! let lease = balancer.pick()?;          // fails fast when nothing is available
//! // ... send the request to lease.url() with your own HTTP stack ...
//! lease.finish(Outcome::Status(200));    // feeds latency, health and load back
//! # Ok(()) }
//! ```
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![forbid(unsafe_code)]
// The retry loop and URI rewriting live in `service`; without it their helpers are unused.
#![cfg_attr(not(feature = "tower"), allow(dead_code))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod balancer;
mod builder;
mod clock;
mod config;
mod dns;
pub mod endpoint;
mod error;
mod event;
pub mod failover;
#[cfg(any(feature = "tower", feature = "aws", feature = "reqwest"))]
mod head_wait;
mod health;
#[cfg(feature = "cache")]
mod hop;
mod lease;
mod load;
pub mod membership;
pub mod options;
mod outcome;
pub mod policy;
mod random;
#[cfg(any(feature = "aws", feature = "reqwest"))]
mod resume;
pub mod retry;
pub mod site;
mod spillover;
mod sync;
mod target;
mod transport;
mod view;

#[cfg(feature = "tower")]
pub mod service;

#[cfg(feature = "client")]
mod client;

#[cfg(feature = "aws")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
pub mod aws;
#[cfg(feature = "cache")]
pub mod cache;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
#[cfg(feature = "sidecar")]
pub mod sidecar;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use balancer::Balancer;
pub use builder::Builder;
pub use config::HostPolicy;
pub use endpoint::{EndpointId, EndpointInfo, EndpointState};
pub use error::{BoxError, Error};
pub use event::Event;
pub use failover::EjectReason;
pub use lease::Lease;
pub use outcome::Outcome;
/// The former name of [`policy`], kept so that existing paths compile.
pub use policy as balance;
pub use policy::Policy;
pub use site::Target;

#[cfg(feature = "client")]
pub use client::Client;

/// The README's Rust examples, compiled by `cargo test --doc` (they need a network, so they are
/// `no_run`): a README that no longer builds fails the tests. They use the `client`, `aws` and
/// `reqwest` features.
#[cfg(all(doctest, feature = "client", feature = "aws", feature = "reqwest"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
