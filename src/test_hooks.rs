//! Test-only faults, armed from the environment (docs/OPERATIONS.md):
//!
//! - `VEIL_TEST_STALL_THREAD=NAME`: once the interface is up, thread NAME stops its loop and
//!   sleeps until shutdown without beating;
//! - `VEIL_TEST_PANIC_THREAD=NAME`: once the interface is up, thread NAME panics;
//! - `VEIL_TEST_STALL_ON_REQUEST=NAME`: the control socket accepts `test-stall`, which stalls
//!   thread NAME from then on; `NAME:MS` stalls it for MS milliseconds, then it goes on.
//!
//! All three go through the dataplane's one mechanism, `veil_dataplane::test_hooks`. Like it,
//! this module is compiled only with debug assertions (the test builds); release builds have
//! no hooks and ignore the variables.

use std::fmt;

use veil_dataplane::pipeline::Shared;
use veil_dataplane::role::Role;

const ENV_STALL: &str = "VEIL_TEST_STALL_THREAD";
const ENV_PANIC: &str = "VEIL_TEST_PANIC_THREAD";
const ENV_STALL_ON_REQUEST: &str = "VEIL_TEST_STALL_ON_REQUEST";

/// The hooks the environment asks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestHooks {
    stall: Option<Role>,
    panic: Option<Role>,
    stall_on_request: Option<Role>,
    /// How long the requested stall lasts (`NAME:MS`); `None`: until shutdown.
    stall_on_request_for: Option<std::time::Duration>,
}

/// A hook variable that does not name a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookError {
    var: &'static str,
    value: String,
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}: expected a thread name: {}",
            self.var,
            self.value,
            Role::thread_names()
        )
    }
}

impl std::error::Error for HookError {}

impl TestHooks {
    /// From the process environment.
    pub fn from_env() -> Result<Self, HookError> {
        Self::from_vars(|var| std::env::var(var).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, HookError> {
        let role = |name: &'static str| match var(name) {
            None => Ok(None),
            Some(value) => Role::from_thread_name(&value)
                .map(Some)
                .ok_or(HookError { var: name, value }),
        };
        // `NAME:MS` for a stall that ends.
        let on_request = var(ENV_STALL_ON_REQUEST);
        let (name, ms) = match on_request.as_deref().map(|v| v.split_once(':')) {
            Some(Some((name, ms))) => (Some(name.to_string()), Some(ms.to_string())),
            Some(None) => (on_request.clone(), None),
            None => (None, None),
        };
        let bad = || HookError {
            var: ENV_STALL_ON_REQUEST,
            value: on_request.clone().unwrap_or_default(),
        };
        let stall_on_request = match &name {
            Some(n) => Some(Role::from_thread_name(n).ok_or_else(bad)?),
            None => None,
        };
        let stall_on_request_for = match ms {
            Some(ms) => Some(std::time::Duration::from_millis(
                ms.parse::<u64>().ok().filter(|&m| m > 0).ok_or_else(bad)?,
            )),
            None => None,
        };
        Ok(Self {
            stall: role(ENV_STALL)?,
            panic: role(ENV_PANIC)?,
            stall_on_request,
            stall_on_request_for,
        })
    }

    /// The interface is up: arm the stall and panic the environment asked for.
    pub fn arm(&self, shared: &Shared) {
        if let Some(role) = self.stall {
            shared.test_hooks.stall(role);
        }
        if let Some(role) = self.panic {
            shared.test_hooks.panic(role);
        }
    }

    /// The control socket's `test-stall`: stall the thread named by
    /// `VEIL_TEST_STALL_ON_REQUEST`. False (and nothing stalls) without the variable.
    pub fn stall_on_request(&self, shared: &Shared) -> bool {
        match self.stall_on_request {
            Some(role) => {
                match self.stall_on_request_for {
                    Some(time) => shared.test_hooks.stall_for(role, time),
                    None => shared.test_hooks.stall(role),
                }
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_roles_and_bad_names_are_refused() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |v: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == v)
                    .map(|(_, x)| x.to_string())
            }
        };
        assert_eq!(TestHooks::from_vars(vars(&[])), Ok(TestHooks::default()));
        let hooks = TestHooks::from_vars(vars(&[
            (ENV_STALL, "veil-tx"),
            (ENV_STALL_ON_REQUEST, "veil-single"),
        ]))
        .unwrap();
        assert_eq!(hooks.stall, Some(Role::Tx));
        assert_eq!(hooks.panic, None);
        assert_eq!(hooks.stall_on_request, Some(Role::Single));
        assert_eq!(hooks.stall_on_request_for, None);
        let timed = TestHooks::from_vars(vars(&[(ENV_STALL_ON_REQUEST, "veil-crypto:1500")]));
        let timed = timed.unwrap();
        assert_eq!(timed.stall_on_request, Some(Role::Crypto));
        assert_eq!(
            timed.stall_on_request_for,
            Some(std::time::Duration::from_millis(1500))
        );
        for bad in ["veil-crypto:", "veil-crypto:0", "veil-crypto:x", "nope:5"] {
            let got = TestHooks::from_vars(move |v: &str| {
                (v == ENV_STALL_ON_REQUEST).then(|| bad.to_string())
            });
            assert!(got.is_err(), "{bad}");
        }
        let e = TestHooks::from_vars(vars(&[(ENV_PANIC, "veil-nope")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "VEIL_TEST_PANIC_THREAD=veil-nope: expected a thread name: veil-rx, veil-crypto, \
             veil-tx, veil-control or veil-single"
        );
    }
}
