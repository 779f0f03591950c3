//! The dataplane's threads by role. A [`Role`] owns its thread's name and the heartbeat slots
//! it beats in [`Shared::heartbeats`](crate::pipeline::Shared::heartbeats); health, metrics,
//! the watchdog and the test hooks all read names and slots from here.

use std::fmt;

/// Heartbeat slots in [`Shared::heartbeats`](crate::pipeline::Shared::heartbeats): one per
/// pipeline thread.
pub const HEARTBEAT_SLOTS: usize = 4;

/// What a dataplane thread does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads the UDP socket and the TUN device.
    Rx,
    /// Opens and seals transport messages.
    Crypto,
    /// Writes to the UDP socket and the TUN device.
    Tx,
    /// Runs the control driver (handshakes, timers, admin requests).
    Control,
    /// Single-threaded mode: all of the above in one loop.
    Single,
}

impl Role {
    /// The threads of pipeline mode, in heartbeat-slot order.
    pub const PIPELINE: [Role; 4] = [Role::Rx, Role::Crypto, Role::Tx, Role::Control];
    /// The one thread of single-threaded mode.
    pub const SINGLE: [Role; 1] = [Role::Single];
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Rx,
        Role::Crypto,
        Role::Tx,
        Role::Control,
        Role::Single,
    ];

    /// The thread's name (what `ps`, logs, health and metrics show).
    pub const fn thread_name(self) -> &'static str {
        match self {
            Role::Rx => "veil-rx",
            Role::Crypto => "veil-crypto",
            Role::Tx => "veil-tx",
            Role::Control => "veil-control",
            Role::Single => "veil-single",
        }
    }

    /// The role of a thread name.
    pub fn from_thread_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.thread_name() == name)
    }

    /// Every thread name, for messages: "veil-rx, veil-crypto, …, or veil-single".
    pub fn thread_names() -> String {
        let names: Vec<&str> = Role::ALL.iter().map(|r| r.thread_name()).collect();
        match names.split_last() {
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }

    /// The slot whose age tells whether this thread runs its loop. The single thread beats
    /// every slot; its own is RX's.
    pub const fn slot(self) -> usize {
        match self {
            Role::Rx | Role::Single => 0,
            Role::Crypto => 1,
            Role::Tx => 2,
            Role::Control => 3,
        }
    }

    /// Every slot the thread beats, as a bit mask (bit n = slot n).
    pub const fn slots(self) -> u8 {
        match self {
            Role::Single => (1 << HEARTBEAT_SLOTS) - 1,
            r => 1 << r.slot(),
        }
    }

    /// The threads that run: [`Role::PIPELINE`] or [`Role::SINGLE`].
    pub const fn threads(single: bool) -> &'static [Role] {
        if single {
            &Role::SINGLE
        } else {
            &Role::PIPELINE
        }
    }

    /// Which of `threads` beats `slot`.
    pub fn beating(threads: &[Role], slot: usize) -> Option<Role> {
        let bit = 1u8.checked_shl(u32::try_from(slot).ok()?)?;
        threads.iter().copied().find(|r| r.slots() & bit != 0)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.thread_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names_map_to_slots() {
        let slots_of_thread = |name| Role::from_thread_name(name).map(Role::slots);
        assert_eq!(slots_of_thread("veil-rx"), Some(0b0001));
        assert_eq!(slots_of_thread("veil-tx"), Some(0b0100));
        assert_eq!(slots_of_thread("veil-single"), Some(0b1111));
        assert_eq!(slots_of_thread("veil-nope"), None);
    }

    #[test]
    fn every_slot_has_one_thread_in_each_mode() {
        for single in [false, true] {
            let threads = Role::threads(single);
            let mut all = 0u8;
            for r in threads {
                assert_eq!(all & r.slots(), 0, "{r} shares a slot");
                all |= r.slots();
            }
            assert_eq!(all, 0b1111);
            assert_eq!(Role::beating(threads, HEARTBEAT_SLOTS), None);
        }
        assert_eq!(Role::beating(&Role::PIPELINE, 2), Some(Role::Tx));
        assert_eq!(Role::beating(&Role::SINGLE, 3), Some(Role::Single));
        assert_eq!(
            Role::thread_names(),
            "veil-rx, veil-crypto, veil-tx, veil-control or veil-single"
        );
    }
}
