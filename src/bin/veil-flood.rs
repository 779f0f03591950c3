//! veil-flood: a handshake-flood load tool for testing a gateway's defences.
//!
//! Sends WireGuard handshake initiations with a valid MAC1 (so they pass the
//! cheapest check and cost the gateway real work) from a static key the
//! gateway does not know, as fast as one thread can, for a while. Only for
//! gateways you run yourself.
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
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let key = match base64::engine::general_purpose::STANDARD.decode(args.key.trim()) {
        Ok(k) if k.len() == 32 => {
            let mut a = [0u8; 32];
            a.copy_from_slice(&k);
            a
        }
        _ => {
            eprintln!("veil-flood: --key is not a base64 WireGuard public key");
            return ExitCode::from(2);
        }
    };
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
    let bind = args.from.unwrap_or_else(|| match args.to {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    });
    let sock = match UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("veil-flood: cannot bind {bind}: {e}");
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
