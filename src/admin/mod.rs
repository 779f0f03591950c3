//! The operator surface of a running interface: everything a person or a tool uses to look at
//! or change it, each on a service thread of its own (never a dataplane thread).
//!
//! Read from the bottom up; a module imports only those above it in this list:
//! - [`http`], [`uapi`], [`ctl_request`]: the wire protocols, pure over a stream;
//! - [`metrics`]: the histogram hub and the Prometheus and JSON renderers;
//! - [`context`]: what every service shares (the admin channel, counters, heartbeats);
//! - [`health`]: the component-by-component health report;
//! - [`ctl`]: veil's own control socket and the `veil show` / `veil health` clients;
//! - [`services`]: binds the sockets and runs the service threads.
//!
//! The runtime (`crate::runtime`) uses this folder; nothing here uses the runtime.

pub mod context;
pub mod ctl;
pub mod ctl_request;
pub mod health;
pub mod http;
pub mod metrics;
pub mod services;
pub mod uapi;
