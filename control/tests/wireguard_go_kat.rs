//! Known-answer test against messages recorded from wireguard-go (see the `source` field of
//! the vector file): both handshake directions and transport data both ways, byte for byte.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant, UNIX_EPOCH};

use rand_core::{CryptoRng, OsRng, RngCore};
use serde_json::Value;
use veil_control::{consume_initiation, InitiationOutcome, PeerHandshake, StaticIdentity};
use veil_dataplane::wire::TRANSPORT_HEADER_LEN;
use veil_dataplane::Keypair;

const KAT: &str = include_str!("vectors/wireguard_go_kat.json");

struct Kat(Value);

/// The recorded ephemeral secret as the random source of one handshake message: creating an
/// initiation or a response draws exactly its 32-byte ephemeral, once.
struct Recorded(Option<[u8; 32]>);

impl RngCore for Recorded {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }

    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let ephemeral = self.0.take().expect("one draw per handshake message");
        dest.copy_from_slice(&ephemeral);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Recorded {}

impl Kat {
    fn load() -> Self {
        Self(serde_json::from_str(KAT).unwrap())
    }
    fn bytes(&self, name: &str) -> Vec<u8> {
        hex::decode(
            self.0[name]
                .as_str()
                .unwrap_or_else(|| panic!("missing {name}")),
        )
        .unwrap()
    }
    fn key(&self, name: &str) -> [u8; 32] {
        self.bytes(name).try_into().unwrap()
    }
    fn u32(&self, name: &str) -> u32 {
        u32::try_from(self.0[name].as_u64().unwrap()).unwrap()
    }
    /// Our identity and our state for the wireguard-go peer.
    fn veil(&self) -> (StaticIdentity, PeerHandshake) {
        let veil = StaticIdentity::from_secret(self.key("veil_secret"));
        assert_eq!(veil.public_key(), &self.key("veil_public"));
        let peer = PeerHandshake::new(&veil, self.key("go_public"), Some(self.key("psk")));
        (veil, peer)
    }
}

/// The ICMP echo request 10.99.0.2 -> 10.99.0.1 that was sent through wireguard-go.
fn echo_request() -> Vec<u8> {
    fn checksum(b: &[u8]) -> [u8; 2] {
        let mut sum: u32 = b
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        (!(sum as u16)).to_be_bytes()
    }
    let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(b"veil kat ping!!!");
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c);
    let mut ip = vec![
        0x45, 0, 0, 44, 0, 1, 0, 0, 64, 1, 0, 0, 10, 99, 0, 2, 10, 99, 0, 1,
    ];
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c);
    ip.extend_from_slice(&icmp);
    ip
}

fn open(kp: &mut Keypair, msg: &[u8]) -> Vec<u8> {
    let mut m = msg.to_vec();
    let (n, counter) = kp.open(&mut m).unwrap();
    assert_eq!(counter, 0);
    m[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + n].to_vec()
}

/// IPv4 ICMP of `icmp_type` from `src` to `dst` (the last octets of 10.99.0.0/24).
fn assert_icmp(packet: &[u8], icmp_type: u8, src: u8, dst: u8) {
    assert_eq!(packet[0], 0x45);
    assert_eq!(packet[9], 1, "ICMP");
    assert_eq!(&packet[12..16], &[10, 99, 0, src]);
    assert_eq!(&packet[16..20], &[10, 99, 0, dst]);
    assert_eq!(packet[20], icmp_type);
}

#[test]
fn responder_answers_wireguard_go_byte_for_byte() {
    let kat = Kat::load();
    let (veil, mut peer) = kat.veil();
    let mut cookies = veil.cookie_checker();
    let now = Instant::now();
    let init = kat.bytes("go_initiation");
    let src = "127.0.0.1:51999".parse().unwrap();
    let valid = match consume_initiation(&veil, &mut cookies, &init, src, false, now, &mut OsRng)
        .unwrap()
    {
        InitiationOutcome::Valid(v) => v,
        InitiationOutcome::CookieReply(_) => panic!("cookie reply while not under load"),
    };
    assert_eq!(valid.remote_static(), &kat.key("go_public"));
    assert_eq!(valid.sender_index(), kat.u32("go_initiation_sender_index"));

    let (response, mut kp) = peer
        .respond(
            &veil,
            valid,
            kat.u32("veil_response_index"),
            now,
            &mut Recorded(Some(kat.key("veil_response_ephemeral"))),
        )
        .unwrap();
    assert_eq!(
        hex::encode(response),
        hex::encode(kat.bytes("veil_response"))
    );

    // wireguard-go accepted that response and sent the echo request that started it all.
    let plain = open(&mut kp, &kat.bytes("go_transport_1"));
    assert_eq!(plain, kat.bytes("go_transport_1_plaintext"));
    assert_icmp(&plain, 8, 1, 2);
}

#[test]
fn initiator_completes_with_wireguard_go_byte_for_byte() {
    let kat = Kat::load();
    let (veil, mut peer) = kat.veil();
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(u64::from(kat.u32("veil_initiation_unix_secs")));
    let init = peer
        .create_initiation(
            &veil,
            kat.u32("veil_initiation_index"),
            now,
            wall,
            &mut Recorded(Some(kat.key("veil_initiation_ephemeral"))),
        )
        .unwrap();
    assert_eq!(hex::encode(init), hex::encode(kat.bytes("veil_initiation")));

    let mut kp = peer
        .consume_response(&veil, &kat.bytes("go_response"), now)
        .unwrap();
    assert_eq!(kp.local_index, kat.u32("veil_initiation_index"));

    // Our first transport packet (an echo request) is what wireguard-go accepted...
    let ping = echo_request();
    let sent = kat.bytes("veil_transport_2");
    let mut buf = vec![0u8; TRANSPORT_HEADER_LEN + ping.len() + 32];
    buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + ping.len()].copy_from_slice(&ping);
    let n = kp.seal(&mut buf, ping.len()).unwrap();
    assert_eq!(hex::encode(&buf[..n]), hex::encode(&sent));

    // ...and the kernel's echo reply came back through it.
    let reply = open(&mut kp, &kat.bytes("go_transport_2"));
    assert_eq!(reply, kat.bytes("go_transport_2_plaintext"));
    assert_icmp(&reply, 0, 1, 2);
}
