//! The metrics endpoint's HTTP server on arbitrary request bytes, arriving in pieces: it answers
//! with a well-formed HTTP/1.1 status line or closes, never panics.
#![no_main]

use std::io;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

mod common;
#[allow(dead_code)]
#[path = "../../src/admin/http.rs"]
mod http;

use common::Client;

impl http::Timed for Client<'_> {
    fn set_timeout(&self, _: Duration) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, input)) = data.split_first() else {
        return;
    };
    if let Ok(req) = http::parse_head(input) {
        assert!(req.method == "GET" || req.method == "HEAD");
        assert!(req.path.starts_with('/') && !req.path.contains('?'));
    }
    let mut c = Client::new(input, usize::from(piece));
    http::serve_connection(&mut c, |path| match path {
        "/metrics" => http::Response::text(200, "m 1\n"),
        _ => http::Response::text(404, "not found\n"),
    });
    assert!(c.output.is_empty() || c.output.starts_with(b"HTTP/1.1 "));
});
