//! A minimal HTTP/1.1 server for `GET /metrics` and `GET /healthz`.
//!
//! One request per connection (`Connection: close`), no request bodies, a request head of at
//! most [`MAX_HEAD`] bytes that must arrive within [`REQUEST_DEADLINE`]. Anything else gets a
//! 4xx answer or, if the client is too slow, nothing; never a panic.
//!
//! [`Connections`] serves each connection on a short-lived thread of its own, at most
//! [`MAX_CONNECTIONS`] at once: a client that connects and sends nothing holds one slot for at
//! most [`REQUEST_DEADLINE`], and when every slot is taken the oldest connection still waiting
//! for its request head is closed to make room, so idle or slow clients cannot starve
//! `/metrics` and `/healthz`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Largest request head read.
pub const MAX_HEAD: usize = 8192;
/// Time a client has to send its request head.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Stack of a connection thread (it renders at most one answer).
const CONNECTION_STACK: usize = 256 * 1024;

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

/// One open connection: a handle to close it with, and whether its request head has arrived
/// (such a connection is being answered and is never closed to make room).
#[derive(Debug)]
struct Open {
    id: u64,
    stream: TcpStream,
    answering: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    open: VecDeque<Open>,
}

/// The connections of one HTTP listener, each served on a thread of its own (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct Connections {
    cap: usize,
    table: Arc<Mutex<Table>>,
}

impl Connections {
    /// At most `cap` connections at once (at least one).
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            table: Arc::default(),
        }
    }

    /// How many connections are being served now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serve `stream` on a new thread with `handler`. When all slots are taken, the oldest
    /// connection still waiting for its request is closed first; when all of them are being
    /// answered, `stream` is closed instead. Errors (no descriptor left for the close handle,
    /// no thread) close `stream`: the client sees a closed connection and may retry.
    pub fn serve<H>(&self, mut stream: TcpStream, handler: Arc<H>) -> io::Result<()>
    where
        H: Fn(&str) -> Response + Send + Sync + 'static,
    {
        let handle = stream.try_clone()?;
        let answering = Arc::new(AtomicBool::new(false));
        let id = {
            let mut t = self.lock();
            if t.open.len() >= self.cap {
                let idle = t
                    .open
                    .iter()
                    .position(|o| !o.answering.load(Ordering::Acquire));
                match idle.and_then(|i| t.open.remove(i)) {
                    Some(oldest) => {
                        let _ = oldest.stream.shutdown(Shutdown::Both);
                    }
                    None => {
                        let _ = stream.shutdown(Shutdown::Both);
                        return Ok(());
                    }
                }
            }
            let id = t.next_id;
            t.next_id = t.next_id.wrapping_add(1);
            t.open.push_back(Open {
                id,
                stream: handle,
                answering: answering.clone(),
            });
            id
        };
        let table = self.clone();
        let spawned = std::thread::Builder::new()
            .name("veil-http".to_string())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                serve_connection(&mut stream, |path| {
                    answering.store(true, Ordering::Release);
                    handler(path)
                });
                table.lock().open.retain(|o| o.id != id);
            });
        if let Err(e) = spawned {
            self.lock().open.retain(|o| o.id != id);
            return Err(e);
        }
        Ok(())
    }
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

    /// Accept on `listener` into `conns` until the returned flag is set.
    fn accept_loop(
        listener: std::net::TcpListener,
        conns: Connections,
    ) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        listener.set_nonblocking(true).unwrap();
        let handler = Arc::new(|path: &str| match path {
            "/metrics" => Response::text(200, "m 1\n"),
            _ => Response::text(404, "not found\n"),
        });
        let t = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let _ = conns.serve(c, handler.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        (stop, t)
    }

    /// `GET /metrics` on a new connection to `addr`, with a 1 s deadline for the answer.
    fn get_within_a_second(addr: std::net::SocketAddr) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn idle_connections_do_not_starve_metrics() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Connections::new(MAX_CONNECTIONS);
        let (stop, t) = accept_loop(listener, conns.clone());
        // More idle clients than slots: the oldest are closed to make room.
        let idle: Vec<TcpStream> = (0..100)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while conns.open() < MAX_CONNECTIONS && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            conns.open(),
            MAX_CONNECTIONS,
            "idle clients hold every slot"
        );
        let answer = get_within_a_second(addr);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
        assert!(answer.ends_with("\r\n\r\nm 1\n"), "{answer:?}");
        assert!(conns.open() <= MAX_CONNECTIONS);
        // The first idle clients were closed: they read end-of-stream, not a timeout.
        let mut first = &idle[0];
        first
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut b = [0u8; 1];
        assert_eq!(first.read(&mut b).unwrap(), 0, "oldest idle client closed");
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }
}
