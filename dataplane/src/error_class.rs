//! What the caller does about an error: veil's one vocabulary of error classes, used by the
//! dataplane (I/O errors on its threads), the runtime (why veil stops) and the logs (the
//! `class` key-value, whose values are [`ErrorClass::as_str`]).
//!
//! | class     | logged as   | the caller…                                   | example                   |
//! |-----------|-------------|-----------------------------------------------|---------------------------|
//! | `Retry`   | `transient` | pauses with a growing backoff and tries again | ENOBUFS, a queued ICMP error |
//! | `Drop`    | `drop`      | drops the one packet or request, counts it    | bytes that fail a check   |
//! | `Restart` | `fatal`     | stops veil with exit 1; systemd restarts it   | TUN interface deleted     |
//! | `Panic`   | `panic`     | as `Restart`: a thread panicked (a bug)       | a bug in any thread       |
//! | `Stop`    | `config`    | stops with exit 2 and no restart              | a bad key in the file     |
//!
//! `Panic` is `Restart` with its cause kept apart, so that logs and alerts can tell a bug
//! from a lost device.

/// What the caller does about an error. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The condition passes: retry after a pause.
    Retry,
    /// Only this packet or request is bad: drop it, count it, go on.
    Drop,
    /// The fd or thread is unusable for good: stop veil so the service manager restarts it.
    Restart,
    /// A thread panicked: handled as [`ErrorClass::Restart`].
    Panic,
    /// Restarting cannot help (the operator must fix the file): stop and stay stopped.
    Stop,
}

impl ErrorClass {
    /// The name in logs (the `class` key-value), as documented in docs/OPERATIONS.md.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retry => "transient",
            ErrorClass::Drop => "drop",
            ErrorClass::Restart => "fatal",
            ErrorClass::Panic => "panic",
            ErrorClass::Stop => "config",
        }
    }

    /// Does veil stop (with or without a restart)?
    pub fn stops_veil(self) -> bool {
        matches!(
            self,
            ErrorClass::Restart | ErrorClass::Panic | ErrorClass::Stop
        )
    }
}

/// `Display` (one fixed message per variant) and `std::error::Error` for an error enum of unit
/// variants: `fixed_messages!(WireError { Length => "…", Type => "…" });`.
#[macro_export]
macro_rules! fixed_messages {
    ($ty:ident { $($variant:ident => $msg:literal),+ $(,)? }) => {
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(match self {
                    $($ty::$variant => $msg,)+
                })
            }
        }

        impl ::std::error::Error for $ty {}
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_names_are_the_documented_ones() {
        let all = [
            ErrorClass::Retry,
            ErrorClass::Drop,
            ErrorClass::Restart,
            ErrorClass::Panic,
            ErrorClass::Stop,
        ];
        let names: Vec<&str> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["transient", "drop", "fatal", "panic", "config"]);
        let stopping: Vec<bool> = all.iter().map(|c| c.stops_veil()).collect();
        assert_eq!(stopping, [false, false, true, true, true]);
    }
}
