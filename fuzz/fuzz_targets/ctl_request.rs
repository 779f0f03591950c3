//! The control socket's request line (`veil show` / `veil health` / `veil down`) on arbitrary bytes: read at
//! most 256 bytes, recognised or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/admin/ctl_request.rs"]
mod ctl_request;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(_)) = ctl_request::read_request(data) {
        // Only the first line, and at most MAX_LINE bytes of it, is read.
        let cut = &data[..data.len().min(ctl_request::MAX_LINE as usize)];
        let line = cut.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = std::str::from_utf8(line).expect("a recognised request is text");
        assert!(["show ", "health ", "down", "test-stall"]
            .iter()
            .any(|p| line.starts_with(p)));
    }
});
