//! The UAPI (`wg` tool) protocol server on arbitrary bytes: `read_request`, `parse_request` and
//! `answer` against a backend that accepts every `set`. Every reply ends in `errno=N` and an
//! empty line; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_control::device::DeviceSnapshot;

mod common;
#[allow(dead_code)]
#[path = "../../src/admin/uapi.rs"]
mod uapi;

use common::Client;

struct Accepting;

impl uapi::Backend for Accepting {
    fn get(&self) -> Result<uapi::InterfaceState, uapi::UapiError> {
        Ok(uapi::InterfaceState {
            listen_port: 51820,
            fwmark: 0,
            device: DeviceSnapshot {
                public_key: [7; 32],
                private_key: None,
                peers: Vec::new(),
                active_sessions: 0,
                handshake_backlog: 0,
                counters: Vec::new(),
            },
        })
    }
    fn set(&self, _: uapi::SetRequest) -> Result<(), uapi::UapiError> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Client::new(data, usize::MAX);
    uapi::serve_connection(&mut c, &Accepting);
    let out = String::from_utf8(c.output).expect("replies are text");
    for reply in out.split_inclusive("\n\n") {
        let last = reply.trim_end().lines().last().unwrap_or_default();
        assert!(last.starts_with("errno="), "{reply:?}");
    }
});
