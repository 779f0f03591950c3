//! veil-flood: a flood tool for testing a gateway's defences.
//!
//! By default it sends WireGuard handshake initiations with a valid MAC1 (so they
//! pass the cheapest check and cost the gateway real work) from a static key the
//! gateway does not know, as fast as one thread can (or at `--rate`), for a while.
//! With `--peer-key`, it is a malicious peer the gateway knows: it completes a
//! handshake with that key and floods every kind of veil control frame in turn,
//! `--seconds` each (as fast as it goes, or at `--rate` frames a second). Only for gateways you run yourself.
#![deny(unsafe_code)]

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use argh::FromArgs;
use base64::Engine;
use rand_core::{OsRng, RngCore};
use veil_control::{PeerHandshake, StaticIdentity};

/// Flood a WireGuard gateway you run with handshake initiations that carry a
/// valid MAC1, to test its cookie and rate-limit defences.
#[derive(FromArgs)]
struct Args {
    /// gateway address, e.g. 192.168.241.1:51820
    #[argh(option)]
    to: SocketAddr,
    /// the gateway's public key (base64)
    #[argh(option)]
    key: String,
    /// local address to send from (default: any)
    #[argh(option)]
    from: Option<SocketAddr>,
    /// how long to flood, in seconds (default 10)
    #[argh(option, default = "10")]
    seconds: u64,
    /// distinct initiations to cycle through (default 256)
    #[argh(option, default = "256")]
    distinct: usize,
    /// initiations per second (default 0: as fast as one thread can)
    #[argh(option, default = "0")]
    rate: u64,
    /// file holding the private key (base64) of a peer the gateway knows: flood control
    /// frames inside a real session instead of initiations
    #[argh(option)]
    peer_key: Option<std::path::PathBuf>,
}

/// A base64 WireGuard key.
fn key32(text: &str) -> Option<[u8; 32]> {
    let k = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    k.try_into().ok()
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let Some(key) = key32(&args.key) else {
        eprintln!("veil-flood: --key is not a base64 WireGuard public key");
        return ExitCode::from(2);
    };
    if let Some(path) = &args.peer_key {
        let secret = std::fs::read_to_string(path).ok().and_then(|t| key32(&t));
        let Some(secret) = secret else {
            eprintln!(
                "veil-flood: --peer-key {} holds no base64 private key",
                path.display()
            );
            return ExitCode::from(2);
        };
        return match frames::flood(&args, key, secret) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("veil-flood: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let me = StaticIdentity::from_secret(secret);
    let now = Instant::now();
    let mut messages = Vec::with_capacity(args.distinct.max(1));
    for i in 0..args.distinct.max(1) {
        let mut hs = PeerHandshake::new(&me, key, None);
        match hs.create_initiation(&me, i as u32 + 1, now, SystemTime::now(), &mut OsRng) {
            Ok(m) => messages.push(m),
            Err(e) => {
                eprintln!("veil-flood: cannot build an initiation: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let sock = match bind(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("veil-flood: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let mut sent: u64 = 0;
    let mut attempts: u64 = 0;
    'flood: while Instant::now() < end {
        for m in &messages {
            if args.rate > 0 {
                // Paced: message n leaves at n / rate seconds after the start.
                let due = start + Duration::from_secs_f64(attempts as f64 / args.rate as f64);
                let now = Instant::now();
                if due >= end {
                    break 'flood;
                }
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            attempts += 1;
            if sock.send_to(m, args.to).is_ok() {
                sent += 1;
            }
        }
    }
    println!(
        "veil-flood: sent {sent} initiations in {} s ({} per second)",
        args.seconds,
        sent / args.seconds.max(1)
    );
    ExitCode::SUCCESS
}

/// Why a flood could not start or go on.
#[derive(Debug)]
enum FloodError {
    /// The local address could not be bound.
    Bind(SocketAddr, std::io::Error),
    /// Sending or receiving on the socket failed.
    Socket(std::io::Error),
    /// No initiation could be built.
    Initiation(veil_control::HandshakeError),
    /// A control frame could not be encoded or sealed.
    Frame(String),
    /// The gateway did not complete a handshake.
    NoHandshake,
}

impl std::fmt::Display for FloodError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bind(addr, e) => write!(f, "cannot bind {addr}: {e}"),
            Self::Socket(e) => write!(f, "socket: {e}"),
            Self::Initiation(e) => write!(f, "cannot build an initiation: {e}"),
            Self::Frame(what) => write!(f, "cannot build a control frame: {what}"),
            Self::NoHandshake => f.write_str("no handshake with the gateway in 10 attempts"),
        }
    }
}

/// The socket to send from: `--from`, or any address of the family of `--to`.
fn bind(args: &Args) -> Result<UdpSocket, FloodError> {
    let bind = args.from.unwrap_or_else(|| match args.to {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    });
    UdpSocket::bind(bind).map_err(|e| FloodError::Bind(bind, e))
}

/// The malicious peer: a real session, then every control-frame kind as fast as it goes.
mod frames {
    use std::time::{Duration, Instant, SystemTime};

    use rand_core::{OsRng, RngCore};
    use veil_control::{PeerHandshake, StaticIdentity};
    use veil_dataplane::wire::{ControlFrame, GOODBYE_SHUTDOWN, MIGRATION_TOKEN_LEN};
    use veil_dataplane::Keypair;

    use super::{Args, FloodError};

    /// Complete a handshake as the peer with `secret`, then flood each frame kind for
    /// `args.seconds` (the goodbye, which ends the session, last).
    pub(super) fn flood(
        args: &Args,
        gateway: [u8; 32],
        secret: [u8; 32],
    ) -> Result<(), FloodError> {
        let sock = super::bind(args)?;
        let me = StaticIdentity::from_secret(secret);
        let keypair = handshake(&sock, args, &me, gateway)?;
        let mut token = [0u8; MIGRATION_TOKEN_LEN];
        OsRng.fill_bytes(&mut token);
        let kinds = [
            ControlFrame::Probe,
            ControlFrame::IdleWarning { seconds_left: 1 },
            ControlFrame::DrainNotice {
                retry_after_ms: u32::MAX,
            },
            ControlFrame::MigrationTokenRequest,
            ControlFrame::MigrationTokenGrant { ttl_sec: 1, token },
            ControlFrame::Migrate { token },
            ControlFrame::Goodbye {
                reason: GOODBYE_SHUTDOWN,
            },
        ];
        let mut buf = [0u8; 256];
        for frame in kinds {
            let start = Instant::now();
            let end = start + Duration::from_secs(args.seconds);
            let mut sent: u64 = 0;
            let mut attempts: u64 = 0;
            while Instant::now() < end {
                if args.rate > 0 {
                    // Paced as the initiation flood is: frame n at n / rate seconds.
                    let due = start + Duration::from_secs_f64(attempts as f64 / args.rate as f64);
                    if due >= end {
                        break;
                    }
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                attempts += 1;
                let len = frame
                    .encode(&mut buf[veil_dataplane::wire::TRANSPORT_HEADER_LEN..])
                    .map_err(|e| FloodError::Frame(format!("{frame:?}: {e}")))?;
                let n = keypair
                    .seal(&mut buf, len)
                    .map_err(|e| FloodError::Frame(format!("{frame:?}: {e}")))?;
                if sock.send_to(&buf[..n], args.to).is_ok() {
                    sent += 1;
                }
            }
            println!("veil-flood: {frame:?}: {sent} frames in {} s", args.seconds);
        }
        Ok(())
    }

    fn handshake(
        sock: &std::net::UdpSocket,
        args: &Args,
        me: &StaticIdentity,
        gateway: [u8; 32],
    ) -> Result<Keypair, FloodError> {
        sock.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(FloodError::Socket)?;
        let mut hs = PeerHandshake::new(me, gateway, None);
        for _ in 0..10 {
            let now = Instant::now();
            let init = hs
                .create_initiation(me, OsRng.next_u32() | 1, now, SystemTime::now(), &mut OsRng)
                .map_err(FloodError::Initiation)?;
            sock.send_to(&init, args.to).map_err(FloodError::Socket)?;
            let mut reply = [0u8; 256];
            let Ok((n, _)) = sock.recv_from(&mut reply) else {
                continue;
            };
            if let Ok(keypair) = hs.consume_response(me, &reply[..n], Instant::now()) {
                return Ok(keypair);
            }
        }
        Err(FloodError::NoHandshake)
    }
}
