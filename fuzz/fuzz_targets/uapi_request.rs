//! The UAPI (`wg` tool) protocol server on arbitrary bytes: `read_request`, `parse_request` and
//! `answer` against a backend that accepts every `set`. Every reply ends in `errno=N` and an
//! empty line; nothing panics.
#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use veil_control::device::DeviceSnapshot;

#[allow(dead_code)]
#[path = "../../src/admin/uapi.rs"]
mod uapi;

struct Client<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl Read for Client<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Client<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Accepting;

impl uapi::Backend for Accepting {
    fn get(&self) -> Result<uapi::InterfaceState, uapi::UapiError> {
        Ok(uapi::InterfaceState {
            listen_port: 51820,
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
    let mut c = Client {
        input: data,
        output: Vec::new(),
    };
    uapi::serve_connection(&mut c, &Accepting);
    let out = String::from_utf8(c.output).expect("replies are text");
    for reply in out.split_inclusive("\n\n") {
        let last = reply.trim_end().lines().last().unwrap_or_default();
        assert!(last.starts_with("errno="), "{reply:?}");
    }
});
