//! How failures end veil, by class ([`ErrorClass`], the vocabulary the dataplane uses too;
//! logged by the names in the first column):
//!
//! | class       | example                                   | what happens                          |
//! |-------------|-------------------------------------------|---------------------------------------|
//! | `config`    | bad key in the file, unknown CPU          | message with file:line, exit 2, nothing created |
//! | `transient` | ENOBUFS on send, a failed receive         | retried with backoff, counted (dataplane) |
//! | `fatal`     | TUN interface deleted (EBADFD)            | stop, drain, remove the interface, exit 1 |
//! | `panic`     | a bug in any thread                       | caught at the thread boundary, then as fatal |
//!
//! Exit status 1 makes systemd's `Restart=on-failure` start veil again;
//! status 2 (config) is excluded in the unit with `RestartPreventExitStatus=2`,
//! since restarting cannot fix a file.
//!
//! Every thread veil starts runs inside `runtime::spawn`, which catches a
//! panic with `catch_unwind` and reports the thread's end to the
//! [`Supervisor`]. The supervisor records the first failure and rings an
//! eventfd the main thread polls next to the signalfd, so a failure stops the
//! process at once, never leaving it hung with a dead thread.

use std::any::Any;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use veil_dataplane::error_class::ErrorClass;
use veil_dataplane::sys::EventFd;

/// Why veil is stopping on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A thread panicked.
    Panicked {
        /// Thread name.
        thread: String,
        /// The panic message.
        message: String,
    },
    /// A thread's loop returned although nobody asked it to stop (a
    /// dataplane fault, see `Shared::fault`, ends a thread this way).
    Ended {
        /// Thread name.
        thread: String,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Panicked { thread, message } => {
                write!(f, "thread {thread} panicked: {message}")
            }
            Failure::Ended { thread } => write!(f, "thread {thread} stopped unexpectedly"),
        }
    }
}

/// Collects the ends of veil's threads and wakes the main thread on a failure.
#[derive(Debug)]
pub struct Supervisor {
    /// Rung on every failure; `None` if no eventfd could be made (the main
    /// loop then notices within its 1 s poll timeout).
    bell: Option<EventFd>,
    /// Set when the main thread began shutting down: threads that end from
    /// then on do so because they were asked to.
    stopping: AtomicBool,
    failure: Mutex<Option<Failure>>,
}

static SUPERVISOR: OnceLock<Supervisor> = OnceLock::new();

/// The process's supervisor.
pub fn supervisor() -> &'static Supervisor {
    SUPERVISOR.get_or_init(Supervisor::new)
}

impl Supervisor {
    fn new() -> Self {
        Self {
            bell: EventFd::new().ok(),
            stopping: AtomicBool::new(false),
            failure: Mutex::new(None),
        }
    }

    /// From now on, threads that end are expected to.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Called by `runtime::spawn` when a thread's body returned (`panic: None`)
    /// or panicked.
    pub fn thread_ended(&self, thread: &str, panic: Option<Box<dyn Any + Send>>) {
        let failure = match panic {
            Some(payload) => Failure::Panicked {
                thread: thread.to_string(),
                message: panic_message(payload.as_ref()),
            },
            None if !self.stopping.load(Ordering::SeqCst) => Failure::Ended {
                thread: thread.to_string(),
            },
            None => return,
        };
        {
            let mut first = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            // The first failure is the cause; the ones after it are its consequences.
            first.get_or_insert(failure);
        }
        if let Some(bell) = &self.bell {
            let _ = bell.wake();
        }
    }

    /// The first failure, if there was one.
    pub fn failure(&self) -> Option<Failure> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Clear the bell after a wake-up.
    pub fn drain_bell(&self) {
        if let Some(bell) = &self.bell {
            let _ = bell.drain();
        }
    }

    /// The fd to poll, if there is one.
    pub fn bell_fd(&self) -> Option<BorrowedFd<'_>> {
        self.bell.as_ref().map(AsFd::as_fd)
    }
}

/// The text of a panic payload (`panic!` with a literal or a format string).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-text panic payload)".to_string()
    }
}

/// Log panics through the logger (so they follow `format = json` and reach the
/// journal with the rest) instead of printing them to stderr. The backtrace
/// follows `RUST_BACKTRACE` as usual.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        let message = panic_message(info.payload());
        let backtrace = std::backtrace::Backtrace::capture();
        let trace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
            _ => String::new(),
        };
        log::error!(
            target: "veil::panic",
            class = ErrorClass::Panic.as_str();
            "thread {name} panicked{location}: {message}{trace}"
        );
        crate::logging::flush();
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_wins_and_rings_the_bell() {
        let s = Supervisor::new();
        assert!(s.failure().is_none());
        s.thread_ended("veil-crypto", Some(Box::new("boom")));
        s.thread_ended("veil-rx", None);
        assert_eq!(
            s.failure(),
            Some(Failure::Panicked {
                thread: "veil-crypto".into(),
                message: "boom".into()
            })
        );
        let fd = s.bell_fd().expect("an eventfd");
        let ready = veil_dataplane::sys::wait_readable(&[fd], Some(std::time::Duration::ZERO))
            .expect("poll");
        assert!(ready.is_readable(0), "the main thread is woken");
        s.drain_bell();
        let ready = veil_dataplane::sys::wait_readable(&[fd], Some(std::time::Duration::ZERO))
            .expect("poll");
        assert!(!ready.is_readable(0));
    }

    #[test]
    fn threads_ending_during_shutdown_are_not_failures_but_panics_are() {
        let s = Supervisor::new();
        s.begin_shutdown();
        s.thread_ended("veil-tx", None);
        assert!(s.failure().is_none());
        s.thread_ended("veil-tx", Some(Box::new(String::from("late"))));
        assert_eq!(
            s.failure().map(|f| f.to_string()),
            Some("thread veil-tx panicked: late".into())
        );
    }

    #[test]
    fn a_thread_ending_on_its_own_is_a_failure() {
        let s = Supervisor::new();
        s.thread_ended("veil-rx", None);
        assert_eq!(
            s.failure().map(|f| f.to_string()),
            Some("thread veil-rx stopped unexpectedly".into())
        );
    }

    #[test]
    fn panic_payloads() {
        let caught = std::panic::catch_unwind(|| panic!("with {}", "format")).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "with format");
        assert_eq!(panic_message(&42u8), "(a non-text panic payload)");
    }
}
