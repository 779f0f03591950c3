//! WireGuard's cross-platform userspace API (the `wg` tool's protocol) on
//! `/var/run/wireguard/IFACE.sock`.
//!
//! A request is `get=1` or `set=1`, then `key=value` lines, then an empty line. `get` is
//! answered with the interface's `key=value` lines, `set` applies the lines; both end with
//! `errno=N` (0 for success, else an `errno.h` value) and an empty line. Keys are lowercase hex.
//! The parser and serializer here are pure; [`serve_connection`] runs the protocol over a
//! stream against a [`Backend`] (the runtime's, which goes through the control thread).
//!
//! Errors, as wireguard-go answers them: `EPROTO` for text that is not the protocol (unknown
//! operation, a line without `=`, a request cut short or too large), `EINVAL` for an unknown key
//! or a bad value, `EADDRINUSE` for a `listen_port` that cannot be bound. A `set` is parsed whole before anything
//! is applied, so a malformed request changes nothing.

use std::fmt::Write as _;
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use zeroize::Zeroize;

use veil_control::device::{DeviceChange, DeviceSnapshot, PeerChange, SecretKey};
use veil_dataplane::route::IpNet;

/// Directory of the sockets the `wg` tool looks for.
pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// Largest request accepted (a `set` of some ten thousand peers).
pub const MAX_REQUEST: usize = 4 << 20;
/// Longest line accepted.
pub const MAX_LINE: usize = 4096;

/// Why a request failed; each maps to the errno the reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UapiError {
    /// Not the protocol.
    Protocol(&'static str),
    /// An unknown key or a bad value. `key` is the (possibly truncated) key, never the value.
    Invalid {
        /// The key.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The listen port is taken.
    PortInUse(u16),
    /// The control thread did not answer.
    TimedOut,
    /// Too many requests at once.
    Busy,
    /// Anything else (the daemon is stopping, a socket error).
    Io(String),
}

impl UapiError {
    /// The `errno.h` value for the reply.
    pub fn errno(&self) -> i32 {
        match self {
            UapiError::Protocol(_) => libc::EPROTO,
            UapiError::Invalid { .. } => libc::EINVAL,
            UapiError::PortInUse(_) => libc::EADDRINUSE,
            UapiError::TimedOut => libc::ETIMEDOUT,
            UapiError::Busy => libc::EBUSY,
            UapiError::Io(_) => libc::EIO,
        }
    }

    fn invalid(key: &str, reason: &'static str) -> Self {
        // Keys come from the client: keep log lines short and printable.
        let key: String = key
            .chars()
            .take(40)
            .map(|c| if c.is_ascii_graphic() { c } else { '?' })
            .collect();
        UapiError::Invalid { key, reason }
    }
}

impl std::fmt::Display for UapiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UapiError::Protocol(why) => write!(f, "protocol error: {why}"),
            UapiError::Invalid { key, reason } => write!(f, "'{key}': {reason}"),
            UapiError::PortInUse(p) => write!(f, "UDP port {p} is in use"),
            UapiError::TimedOut => f.write_str("the control thread did not answer in time"),
            UapiError::Busy => f.write_str("too many requests at once"),
            UapiError::Io(e) => f.write_str(e),
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone)]
pub enum Request {
    /// `get=1`.
    Get,
    /// `set=1`.
    Set(SetRequest),
}

/// A parsed `set=1`.
#[derive(Debug, Clone, Default)]
pub struct SetRequest {
    /// `listen_port=`.
    pub listen_port: Option<u16>,
    /// `fwmark=` (0 clears the mark).
    pub fwmark: Option<u32>,
    /// The device part: private key, `replace_peers`, peers.
    pub change: DeviceChange,
}

impl SetRequest {
    /// Does the request change the device (anything but the port)?
    pub fn changes_device(&self) -> bool {
        self.change.private_key.is_some()
            || self.change.replace_peers
            || !self.change.peers.is_empty()
    }
}

/// What `get` reports.
#[derive(Debug, Clone)]
pub struct InterfaceState {
    /// UDP port in use.
    pub listen_port: u16,
    /// The outer socket's mark (0: none).
    pub fwmark: u32,
    /// The control thread's view, with secrets.
    pub device: DeviceSnapshot,
}

/// Where requests go.
pub trait Backend {
    /// Read the interface for `get`.
    fn get(&self) -> Result<InterfaceState, UapiError>;
    /// Apply a `set`.
    fn set(&self, request: SetRequest) -> Result<(), UapiError>;
}

/// Read one request: lines up to an empty line. `Ok(None)` at end of stream before any byte.
/// A stream that ends without the empty line ends the request there.
pub fn read_request(r: &mut impl BufRead) -> Result<Option<Vec<String>>, UapiError> {
    let mut lines = Vec::new();
    let mut total = 0usize;
    // Wiped on return: a line may hold a key. Lines are short; it never reallocates twice.
    let mut line = zeroize::Zeroizing::new(Vec::with_capacity(MAX_LINE + 1));
    loop {
        line.clear();
        let n = io::Read::take(&mut *r, (MAX_LINE + 1) as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    UapiError::Protocol("request not finished in time")
                }
                _ => UapiError::Io(e.to_string()),
            })?;
        if n == 0 {
            return Ok((!lines.is_empty()).then_some(lines));
        }
        total = total.saturating_add(n);
        if total > MAX_REQUEST {
            return Err(UapiError::Protocol("request too large"));
        }
        let ended = line.last() == Some(&b'\n');
        if !ended && n > MAX_LINE {
            return Err(UapiError::Protocol("line too long"));
        }
        if ended {
            line.pop();
        }
        if line.is_empty() {
            if ended {
                return Ok(Some(lines));
            }
            continue;
        }
        let text = std::str::from_utf8(&line).map_err(|_| UapiError::Protocol("not UTF-8"))?;
        lines.push(text.to_string());
        if !ended {
            // End of stream in the middle of a line.
            return Ok(Some(lines));
        }
    }
}

fn split(line: &str) -> Result<(&str, &str), UapiError> {
    line.split_once('=')
        .ok_or(UapiError::Protocol("a line without '='"))
}

/// Parse the lines of one request.
pub fn parse_request(lines: &[String]) -> Result<Request, UapiError> {
    let (first, rest) = lines
        .split_first()
        .ok_or(UapiError::Protocol("empty request"))?;
    match split(first)? {
        ("get", "1") => {
            if rest.is_empty() {
                Ok(Request::Get)
            } else {
                Err(UapiError::Protocol("get=1 takes no lines"))
            }
        }
        ("set", "1") => parse_set(rest).map(Request::Set),
        ("get" | "set", _) => Err(UapiError::Protocol("unsupported protocol version")),
        _ => Err(UapiError::Protocol("unknown operation")),
    }
}

fn parse_set(lines: &[String]) -> Result<SetRequest, UapiError> {
    let mut req = SetRequest::default();
    for line in lines {
        let (key, value) = split(line)?;
        if key == "public_key" {
            req.change
                .peers
                .push(PeerChange::new(parse_key(key, value)?));
            continue;
        }
        match req.change.peers.last_mut() {
            None => parse_interface_line(&mut req, key, value)?,
            Some(peer) => parse_peer_line(peer, key, value)?,
        }
    }
    Ok(req)
}

fn parse_interface_line(req: &mut SetRequest, key: &str, value: &str) -> Result<(), UapiError> {
    match key {
        "private_key" => {
            req.change.private_key = Some(SecretKey::new(parse_key(key, value)?));
        }
        "listen_port" => req.listen_port = Some(parse_number(key, value)?),
        // As wireguard-go: decimal, and an empty value clears the mark like 0.
        "fwmark" => {
            req.fwmark = Some(if value.is_empty() {
                0
            } else {
                parse_number(key, value)?
            });
        }
        "replace_peers" => req.change.replace_peers = parse_true(key, value)?,
        _ => return Err(UapiError::invalid(key, "unknown interface key")),
    }
    Ok(())
}

fn parse_peer_line(peer: &mut PeerChange, key: &str, value: &str) -> Result<(), UapiError> {
    match key {
        "remove" => peer.remove = parse_true(key, value)?,
        "update_only" => peer.update_only = parse_true(key, value)?,
        "preshared_key" => peer.preshared_key = Some(SecretKey::new(parse_key(key, value)?)),
        "endpoint" => {
            let addr: SocketAddr = value
                .parse()
                .map_err(|_| UapiError::invalid(key, "expected IP:PORT or [IPv6]:PORT"))?;
            if addr.port() == 0 {
                return Err(UapiError::invalid(key, "port 0"));
            }
            peer.endpoint = Some(addr);
        }
        "persistent_keepalive_interval" => {
            peer.persistent_keepalive = Some(parse_number(key, value)?);
        }
        "replace_allowed_ips" => peer.replace_allowed_ips = parse_true(key, value)?,
        "allowed_ip" => {
            let net: IpNet = value
                .parse()
                .map_err(|_| UapiError::invalid(key, "expected ADDRESS/PREFIX"))?;
            peer.allowed_ips.push(net);
        }
        "protocol_version" => {
            if value != "1" {
                return Err(UapiError::invalid(key, "only protocol version 1 exists"));
            }
        }
        _ => return Err(UapiError::invalid(key, "unknown peer key")),
    }
    Ok(())
}

fn parse_true(key: &str, value: &str) -> Result<bool, UapiError> {
    match value {
        "true" => Ok(true),
        _ => Err(UapiError::invalid(key, "the only value is 'true'")),
    }
}

fn parse_number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, UapiError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UapiError::invalid(key, "expected a decimal number"));
    }
    value
        .parse()
        .map_err(|_| UapiError::invalid(key, "number out of range"))
}

fn parse_key(key: &str, value: &str) -> Result<[u8; 32], UapiError> {
    let bytes = value.as_bytes();
    if bytes.len() != 64 {
        return Err(UapiError::invalid(key, "expected 64 hex digits"));
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = hex_digit(pair[0]).ok_or_else(|| UapiError::invalid(key, "not hex"))?;
        let lo = hex_digit(pair[1]).ok_or_else(|| UapiError::invalid(key, "not hex"))?;
        *o = (hi << 4) | lo;
    }
    Ok(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex of a key.
pub fn hex(key: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in key {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The `key=value` lines answering `get=1` (without the closing `errno`).
pub fn write_get(state: &InterfaceState, out: &mut String) {
    let d = &state.device;
    if let Some(k) = &d.private_key {
        let _ = writeln!(out, "private_key={}", hex(k.as_bytes()));
    }
    let _ = writeln!(out, "listen_port={}", state.listen_port);
    if state.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", state.fwmark);
    }
    for p in &d.peers {
        let _ = writeln!(out, "public_key={}", hex(&p.public_key));
        let psk = p.preshared_key.as_ref().map_or([0; 32], |k| *k.as_bytes());
        let _ = writeln!(out, "preshared_key={}", hex(&psk));
        out.push_str("protocol_version=1\n");
        if let Some(ep) = p.endpoint {
            let _ = writeln!(out, "endpoint={ep}");
        }
        let since = p
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or(Duration::ZERO);
        let _ = writeln!(out, "last_handshake_time_sec={}", since.as_secs());
        let _ = writeln!(out, "last_handshake_time_nsec={}", since.subsec_nanos());
        let _ = writeln!(out, "tx_bytes={}", p.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", p.rx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            p.persistent_keepalive.unwrap_or(0)
        );
        for net in &p.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
}

/// Answer one parsed request: the reply text, and the error (for the log) if there was one.
pub fn answer(
    request: Result<Request, UapiError>,
    backend: &impl Backend,
) -> (String, Option<UapiError>) {
    // Room for every peer up front: a `get` carries the private key, and a buffer that grows
    // would leave copies of it in freed memory.
    let mut out = String::with_capacity(1024);
    let result = request.and_then(|r| match r {
        Request::Get => backend.get().map(|state| {
            out.reserve(256 + 512 * state.device.peers.len());
            write_get(&state, &mut out)
        }),
        Request::Set(set) => backend.set(set),
    });
    match result {
        Ok(()) => {
            out.push_str("errno=0\n\n");
            (out, None)
        }
        Err(e) => {
            // A failed get sends no partial state.
            out.clear();
            let _ = write!(out, "errno={}\n\n", e.errno());
            (out, Some(e))
        }
    }
}

/// Serve requests on one connection until the client closes it or a request is malformed
/// (after which the stream cannot be trusted to be in step). Errors are logged without values.
pub fn serve_connection(stream: impl io::Read + Write, backend: &impl Backend) {
    let mut reader = io::BufReader::new(stream);
    loop {
        let lines = match read_request(&mut reader) {
            Ok(Some(lines)) => Ok(lines),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let broken = lines.is_err();
        // The lines may hold a private or pre-shared key in hex.
        let request = lines.and_then(|mut l| {
            let r = parse_request(&l);
            l.zeroize();
            r
        });
        let malformed = matches!(request, Err(UapiError::Protocol(_)));
        let (mut reply, err) = answer(request, backend);
        if let Some(e) = err {
            log::warn!("UAPI request refused (errno {}): {e}", e.errno());
        }
        let w = reader.get_mut();
        let sent = w.write_all(reply.as_bytes()).and_then(|()| w.flush());
        reply.zeroize();
        if sent.is_err() || broken || malformed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use veil_control::device::PeerSnapshot;
    use veil_dataplane::link::PeerId;

    struct Fake {
        sets: RefCell<Vec<SetRequest>>,
    }

    impl Backend for Fake {
        fn get(&self) -> Result<InterfaceState, UapiError> {
            Ok(InterfaceState {
                listen_port: 51820,
                fwmark: 0xca6c,
                device: DeviceSnapshot {
                    public_key: [1; 32],
                    private_key: Some(SecretKey::new([0xAB; 32])),
                    peers: vec![PeerSnapshot {
                        id: PeerId(0),
                        public_key: [2; 32],
                        has_preshared_key: false,
                        preshared_key: None,
                        endpoint: Some("[fd41::2]:40000".parse().unwrap()),
                        allowed_ips: vec!["10.9.0.2/32".parse().unwrap()],
                        last_handshake: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5)),
                        rx_bytes: 10,
                        tx_bytes: 20,
                        rx_packets: 1,
                        tx_packets: 2,
                        persistent_keepalive: Some(25),
                        session_active: true,
                        migration_validated: false,
                        breaker: veil_control::breaker::BreakerState::Closed,
                    }],
                    active_sessions: 1,
                    handshake_backlog: 0,
                    counters: vec![],
                },
            })
        }

        fn set(&self, request: SetRequest) -> Result<(), UapiError> {
            self.sets.borrow_mut().push(request);
            Ok(())
        }
    }

    fn fake() -> Fake {
        Fake {
            sets: RefCell::new(Vec::new()),
        }
    }

    fn run(input: &[u8], backend: &Fake) -> String {
        struct Duplex<'a> {
            input: &'a [u8],
            output: Vec<u8>,
        }
        impl io::Read for Duplex<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.input.read(buf)
            }
        }
        impl Write for Duplex<'_> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.output.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut d = Duplex {
            input,
            output: Vec::new(),
        };
        serve_connection(&mut d, backend);
        String::from_utf8(d.output).unwrap()
    }

    #[test]
    fn get_lists_the_interface_like_wireguard_go() {
        let out = run(b"get=1\n\n", &fake());
        let want = format!(
            "private_key={}\nlisten_port=51820\nfwmark=51820\npublic_key={}\npreshared_key={}\nprotocol_version=1\n\
             endpoint=[fd41::2]:40000\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\n\
             tx_bytes=20\nrx_bytes=10\npersistent_keepalive_interval=25\nallowed_ip=10.9.0.2/32\nerrno=0\n\n",
            "ab".repeat(32),
            "02".repeat(32),
            "00".repeat(32)
        );
        assert_eq!(out, want);
    }

    #[test]
    fn set_as_wg_sends_it() {
        let b = fake();
        let req = format!(
            "set=1\nprivate_key={}\nlisten_port=51821\nfwmark=0\nreplace_peers=true\n\
             public_key={}\npreshared_key={}\nendpoint=192.0.2.1:51820\npersistent_keepalive_interval=25\n\
             replace_allowed_ips=true\nallowed_ip=10.9.0.2/32\nallowed_ip=fd09::2/128\nprotocol_version=1\n\
             public_key={}\nremove=true\n\n",
            "11".repeat(32),
            "22".repeat(32),
            "33".repeat(32),
            "44".repeat(32)
        );
        assert_eq!(run(req.as_bytes(), &b), "errno=0\n\n");
        let sets = b.sets.borrow();
        let s = &sets[0];
        assert_eq!(s.listen_port, Some(51821));
        assert_eq!(s.fwmark, Some(0));
        assert!(s.change.replace_peers);
        assert_eq!(s.change.private_key, Some(SecretKey::new([0x11; 32])));
        let p = &s.change.peers[0];
        assert_eq!(p.public_key, [0x22; 32]);
        assert_eq!(p.preshared_key, Some(SecretKey::new([0x33; 32])));
        assert_eq!(p.endpoint, Some("192.0.2.1:51820".parse().unwrap()));
        assert_eq!(p.persistent_keepalive, Some(25));
        assert!(p.replace_allowed_ips);
        assert_eq!(p.allowed_ips.len(), 2);
        assert!(s.change.peers[1].remove);
    }

    #[test]
    fn several_requests_on_one_connection() {
        let b = fake();
        let out = run(b"get=1\n\nset=1\nlisten_port=1\n\n", &b);
        assert!(out.ends_with("errno=0\n\nerrno=0\n\n"));
        assert_eq!(b.sets.borrow().len(), 1);
    }

    fn errno_of(input: &str) -> String {
        run(input.as_bytes(), &fake())
    }

    #[test]
    fn bad_input_gets_the_right_errno_and_applies_nothing() {
        let einval = format!("errno={}\n\n", libc::EINVAL);
        let eproto = format!("errno={}\n\n", libc::EPROTO);
        assert_eq!(errno_of("junk\n\n"), eproto);
        assert_eq!(errno_of("get=2\n\n"), eproto);
        assert_eq!(errno_of("delete=1\n\n"), eproto);
        assert_eq!(errno_of("set=1\nno equals sign\n\n"), eproto);
        assert_eq!(errno_of("set=1\nlisten_port=65536\n\n"), einval);
        assert_eq!(errno_of("set=1\nlisten_port=-1\n\n"), einval);
        assert_eq!(errno_of("set=1\nprivate_key=abc\n\n"), einval);
        assert_eq!(
            errno_of(&format!("set=1\nprivate_key={}\n\n", "zz".repeat(32))),
            einval
        );
        assert_eq!(
            errno_of("set=1\nallowed_ip=10.0.0.0/8\n\n"),
            einval,
            "peer key before public_key"
        );
        assert_eq!(
            errno_of(&format!(
                "set=1\npublic_key={}\nallowed_ip=10.0.0.0/33\n\n",
                "22".repeat(32)
            )),
            einval
        );
        assert_eq!(
            errno_of(&format!(
                "set=1\npublic_key={}\nendpoint=nohost\n\n",
                "22".repeat(32)
            )),
            einval
        );
        assert_eq!(
            errno_of(&format!(
                "set=1\npublic_key={}\nremove=yes\n\n",
                "22".repeat(32)
            )),
            einval
        );
        assert_eq!(errno_of("set=1\nfwmark=0x7\n\n"), einval);
        assert_eq!(errno_of("set=1\nfwmark=4294967296\n\n"), einval);
        let b = fake();
        run(b"set=1\nlisten_port=1\nbogus=1\n\n", &b);
        assert!(
            b.sets.borrow().is_empty(),
            "nothing applied from a bad request"
        );
    }

    #[test]
    fn oversized_lines_and_requests_are_refused() {
        let long = format!("set=1\n{}\n\n", "a".repeat(MAX_LINE + 10));
        assert_eq!(errno_of(&long), format!("errno={}\n\n", libc::EPROTO));
        let mut many = String::from("set=1\n");
        while many.len() <= MAX_REQUEST {
            many.push_str("listen_port=1\n");
        }
        many.push('\n');
        assert_eq!(errno_of(&many), format!("errno={}\n\n", libc::EPROTO));
    }

    #[test]
    fn request_without_final_empty_line_still_answered() {
        assert_eq!(errno_of("get=1\n"), errno_of("get=1\n\n"));
        assert_eq!(errno_of("get=1"), errno_of("get=1\n\n"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let out = run(&input, &fake());
            proptest::prop_assert!(out.is_empty() || out.contains("errno="));
        }

        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec("[a-z_]{0,12}=?[0-9a-f:./\\[\\]]{0,70}", 0..12)) {
            let mut text = String::from("set=1\n");
            for l in &lines {
                text.push_str(l);
                text.push('\n');
            }
            text.push('\n');
            let out = run(text.as_bytes(), &fake());
            proptest::prop_assert!(out.starts_with("errno="));
        }

        #[test]
        fn keys_round_trip(key in proptest::array::uniform32(proptest::num::u8::ANY)) {
            proptest::prop_assert_eq!(parse_key("k", &hex(&key)).unwrap(), key);
        }
    }
}
