//! The configuration file parser on arbitrary text: `Config::parse_with` with a resolver that
//! resolves nothing (no DNS from a fuzzer). It accepts or lists errors, never panics.
#![no_main]

use std::io;
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/cli.rs"]
mod cli;
#[allow(dead_code, unused_imports)]
#[path = "../../src/config/mod.rs"]
mod config;
#[allow(dead_code)]
#[path = "../../src/keys.rs"]
mod keys;
#[allow(dead_code, unused_imports)]
#[path = "../../src/threading/mod.rs"]
mod threading;

struct NoDns;

impl config::Resolve for NoDns {
    fn resolve(&self, _: &str, _: u16) -> io::Result<Vec<SocketAddr>> {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no DNS while fuzzing",
        ))
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match config::Config::parse_with(&text, "fuzz.conf", &NoDns) {
        Ok(c) => {
            let _ = c.warnings.len();
        }
        Err(errors) => assert!(!errors.to_string().is_empty()),
    }
});
