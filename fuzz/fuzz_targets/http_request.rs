//! The metrics endpoint's HTTP server on arbitrary request bytes, arriving in pieces: it answers
//! with a well-formed HTTP/1.1 status line or closes, never panics.
#![no_main]

use std::io::{self, Read, Write};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/admin/http.rs"]
mod http;

/// A client that sends the input in pieces whose sizes the input's first byte picks.
struct Client<'a> {
    input: &'a [u8],
    piece: usize,
    output: Vec<u8>,
}

impl Read for Client<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.len().min(buf.len()).min(self.piece);
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
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
    let mut c = Client {
        input,
        piece: usize::from(piece).max(1),
        output: Vec::new(),
    };
    http::serve_connection(&mut c, |path| match path {
        "/metrics" => http::Response::text(200, "m 1\n"),
        _ => http::Response::text(404, "not found\n"),
    });
    assert!(c.output.is_empty() || c.output.starts_with(b"HTTP/1.1 "));
});
