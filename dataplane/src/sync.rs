//! The primitives veil's own wake-up and hand-off protocols ([`crate::doorbell`],
//! [`crate::baton`]) are built on: std's, or loom's with the `loom` feature, so the models in
//! `loom_models.rs` check the real code under every interleaving loom explores:
//!
//! ```sh
//! cargo test -p veil-dataplane --features loom --lib loom_models
//! ```
//!
//! The feature is for that run only: loom's types work inside `loom::model` and nowhere else.

#[cfg(feature = "loom")]
pub(crate) use loom::sync::{
    atomic::{fence, AtomicBool, Ordering},
    Mutex, MutexGuard,
};
#[cfg(not(feature = "loom"))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicBool, Ordering},
    Mutex, MutexGuard,
};

use std::time::Duration;

#[cfg(feature = "loom")]
use loom::thread::{current, park, Thread};
#[cfg(not(feature = "loom"))]
use std::thread::{current, park_timeout, Thread};

/// The thread a doorbell unparks, set once by that thread.
pub(crate) struct ThreadSlot {
    #[cfg(not(feature = "loom"))]
    thread: std::sync::OnceLock<Thread>,
    #[cfg(feature = "loom")]
    thread: loom::sync::Mutex<Option<Thread>>,
}

impl ThreadSlot {
    pub(crate) fn new() -> Self {
        Self {
            thread: Default::default(),
        }
    }

    /// The calling thread is the one to unpark (the first call wins).
    pub(crate) fn set_current(&self) {
        #[cfg(not(feature = "loom"))]
        let _ = self.thread.set(current());
        #[cfg(feature = "loom")]
        if let Ok(mut t) = self.thread.lock() {
            t.get_or_insert_with(current);
        }
    }

    /// Unpark that thread, if it registered.
    pub(crate) fn unpark(&self) {
        #[cfg(not(feature = "loom"))]
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
        #[cfg(feature = "loom")]
        if let Ok(t) = self.thread.lock() {
            if let Some(t) = t.as_ref() {
                t.unpark();
            }
        }
    }
}

/// Park the calling thread until unparked, for at most `timeout`. Under loom there is no
/// timeout: a lost wake-up is then a deadlock, which loom reports.
pub(crate) fn park_for(timeout: Duration) {
    #[cfg(not(feature = "loom"))]
    park_timeout(timeout);
    #[cfg(feature = "loom")]
    {
        let _ = timeout;
        park();
    }
}
