//! Test-only faults, armed from the environment (docs/OPERATIONS.md):
//!
//! - `VEIL_TEST_STALL_THREAD=NAME`: once the interface is up, thread NAME stops its loop and
//!   sleeps until shutdown without beating;
//! - `VEIL_TEST_PANIC_THREAD=NAME`: once the interface is up, thread NAME panics;
//! - `VEIL_TEST_STALL_ON_REQUEST=NAME`: the control socket accepts `test-stall`, which stalls
//!   thread NAME from then on.
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
        Ok(Self {
            stall: role(ENV_STALL)?,
            panic: role(ENV_PANIC)?,
            stall_on_request: role(ENV_STALL_ON_REQUEST)?,
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
                shared.test_hooks.stall(role);
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
        let e = TestHooks::from_vars(vars(&[(ENV_PANIC, "veil-nope")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "VEIL_TEST_PANIC_THREAD=veil-nope: expected a thread name: veil-rx, veil-crypto, \
             veil-tx, veil-control or veil-single"
        );
    }
}
