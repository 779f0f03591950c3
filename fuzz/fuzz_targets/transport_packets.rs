//! Transport packets through the crypto stage with a real session: after decryption the inner
//! IP parsing, the allowed-IPs check and veil's control frames see attacker-chosen plaintext.
//!
//! The input is a list of datagrams (each: one mode byte, a length byte, that many bytes).
//! Mode bit 0 clear: the bytes go to the stage as a UDP datagram as they are. Bit 0 set: they
//! are the plaintext of a transport message sealed with the peer's genuine session key (bit 1
//! also makes them start with a plausible IPv4 or IPv6 header from the peer's allowed address),
//! so they pass the tag and reach the inner parsers. Nothing may panic, and a packet delivered
//! to the TUN device must have been sealed with the session key.
#![no_main]

use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use veil_dataplane::batch::{buffer_size, Action, Batch, Home, Source};
use veil_dataplane::link::{Command, Epoch, KeypairRole, PeerId, PeerStats};
use veil_dataplane::stage::CryptoStage;
use veil_dataplane::timing::Timing;
use veil_dataplane::Keypair;

const MTU: usize = 1420;
const HEADER: usize = 16;
const TAG: usize = 16;

fn plausible_header(bytes: &mut Vec<u8>, v6: bool) {
    let len = bytes.len();
    if !v6 && len >= 20 {
        bytes[0] = 0x45;
        bytes[2..4].copy_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        bytes[12..16].copy_from_slice(&[10, 0, 0, 2]);
    } else if v6 && len >= 40 {
        bytes[0] = 0x60;
        let payload = u16::try_from(len - 40).unwrap_or(u16::MAX);
        bytes[4..6].copy_from_slice(&payload.to_be_bytes());
        bytes[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    }
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut stage = CryptoStage::new(Timing::default(), Epoch::new(now), Arc::default());
    stage.apply(
        Command::AddPeer {
            peer: PeerId(0),
            allowed_ips: vec![
                "10.0.0.2/32".parse().expect("literal"),
                "fd00::2/128".parse().expect("literal"),
            ],
            endpoint: Some("192.0.2.2:51820".parse().expect("literal")),
            stats: Arc::new(PeerStats::default()),
        },
        now,
    );
    let (k1, k2) = ([7u8; 32], [9u8; 32]);
    let peer: Keypair = Keypair::new(&k1, &k2, 200, 100, now, true);
    stage.apply(
        Command::InstallKeypair {
            peer: PeerId(0),
            keypair: Arc::new(Keypair::new(&k2, &k1, 100, 200, now, false)),
            role: KeypairRole::Responder,
            announce: true,
        },
        now,
    );

    let mut batch = Batch::new(Home::Rx, buffer_size(MTU));
    batch.clear(Source::Udp);
    let mut sealed = Vec::new();
    let mut rest = data;
    let mut n = 0;
    while let [mode, len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len()).min(MTU - HEADER - TAG);
        let (bytes, after) = tail.split_at(take);
        rest = after;
        let Some((buf, meta)) = batch.packet_mut(n) else {
            break;
        };
        let msg_len = if mode & 1 == 0 {
            buf[..bytes.len()].copy_from_slice(bytes);
            bytes.len()
        } else {
            let mut plain = bytes.to_vec();
            if mode & 2 != 0 {
                plausible_header(&mut plain, mode & 4 != 0);
            }
            buf[HEADER..HEADER + plain.len()].copy_from_slice(&plain);
            let room = ((HEADER + plain.len()).next_multiple_of(16) + TAG).min(buf.len());
            match peer.seal(&mut buf[..room], plain.len()) {
                Ok(l) => l,
                Err(_) => continue,
            }
        };
        sealed.push(mode & 1 != 0);
        meta.offset = 0;
        meta.len = msg_len;
        meta.addr = "192.0.2.2:51820".parse().expect("literal");
        n += 1;
    }
    batch.len = n;
    let mut events = Vec::new();
    stage.process(&mut batch, now, &mut events);
    for (i, was_sealed) in sealed.iter().enumerate() {
        if let Some((_, meta)) = batch.packet(i) {
            assert!(
                *was_sealed || meta.action != Action::Tun,
                "unsealed packet delivered"
            );
        }
    }
});
