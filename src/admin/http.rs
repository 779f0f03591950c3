//! A minimal HTTP/1.1 server for `GET /metrics` and `GET /healthz`.
//!
//! One request per connection (`Connection: close`), no request bodies, a request head of at
//! most [`MAX_HEAD`] bytes that must arrive within [`REQUEST_DEADLINE`]. Anything else gets a
//! 4xx answer or, if the client is too slow, nothing; never a panic.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// Largest request head read.
pub const MAX_HEAD: usize = 8192;
/// Time a client has to send its request head.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content-Type.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    /// A `text/plain` answer.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    /// `GET` or `HEAD` (others are refused before a handler sees them).
    pub method: String,
    /// The path, without any query string.
    pub path: String,
}

/// Parse a request head; `Err` is the answer to give.
pub fn parse_head(head: &[u8]) -> Result<RequestLine, Response> {
    let bad = || Response::text(400, "bad request\n");
    let text = std::str::from_utf8(head).map_err(|_| bad())?;
    let line = text.lines().next().ok_or_else(bad)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(bad());
    }
    if method != "GET" && method != "HEAD" {
        return Err(Response::text(405, "only GET and HEAD\n"));
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok(RequestLine {
        method: method.to_string(),
        path: path.to_string(),
    })
}

/// Where the head ends (after the empty line), if it arrived.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// A stream whose read timeout can be set (a TCP stream; tests use a byte slice).
pub trait Timed: Read + Write {
    /// Set the timeout of the next reads.
    fn set_timeout(&self, t: Duration) -> io::Result<()>;
}

impl Timed for std::net::TcpStream {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

/// Read one request from `stream`, answer it with `handler(path)`, and return.
pub fn serve_connection(stream: &mut impl Timed, handler: impl FnOnce(&str) -> Response) {
    let started = Instant::now();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let answer = loop {
        if let Some(end) = head_end(&buf) {
            break match parse_head(&buf[..end]) {
                Ok(req) => {
                    let mut r = handler(&req.path);
                    if req.method == "HEAD" {
                        let len = r.body.len();
                        r.body.clear();
                        write_response(stream, &r, len);
                        return;
                    }
                    r
                }
                Err(r) => r,
            };
        }
        if buf.len() > MAX_HEAD {
            break Response::text(431, "request head too large\n");
        }
        let left = REQUEST_DEADLINE.saturating_sub(started.elapsed());
        if left.is_zero() || stream.set_timeout(left).is_err() {
            break Response::text(408, "request timeout\n");
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break Response::text(408, "request timeout\n"),
        }
    };
    let len = answer.body.len();
    write_response(stream, &answer, len);
}

fn write_response(stream: &mut impl Timed, r: &Response, content_length: usize) {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {content_length}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type
    );
    let _ = stream.set_timeout(REQUEST_DEADLINE);
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(r.body.as_bytes()))
        .and_then(|()| stream.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        input: Vec<u8>,
        pos: usize,
        output: Vec<u8>,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let rest = self.input.get(self.pos..).unwrap_or(&[]);
            let n = rest.len().min(buf.len()).min(7); // arrives in small pieces
            buf[..n].copy_from_slice(&rest[..n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Timed for Fake {
        fn set_timeout(&self, _: Duration) -> io::Result<()> {
            Ok(())
        }
    }

    fn serve(input: &[u8]) -> String {
        let mut f = Fake {
            input: input.to_vec(),
            pos: 0,
            output: Vec::new(),
        };
        serve_connection(&mut f, |path| match path {
            "/metrics" => Response::text(200, "m 1\n"),
            _ => Response::text(404, "not found\n"),
        });
        String::from_utf8_lossy(&f.output).into_owned()
    }

    #[test]
    fn get_head_and_errors() {
        let ok = serve(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 4\r\n") && ok.ends_with("\r\n\r\nm 1\n"));
        let head = serve(b"HEAD /metrics HTTP/1.0\n\n");
        assert!(head.contains("Content-Length: 4\r\n") && head.ends_with("\r\n\r\n"));
        assert!(serve(b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(serve(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(serve(b"\x00\xff junk\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(serve(b"GET metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400"));
        let big = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert!(serve(big.as_bytes()).starts_with("HTTP/1.1 431"));
        assert_eq!(serve(b"GET /metr"), "", "client went away mid-request");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_requests_never_panic(input in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let out = serve(&input);
            proptest::prop_assert!(out.is_empty() || out.starts_with("HTTP/1.1 "));
        }
    }
}
