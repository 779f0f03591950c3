//! A live hand-off's state (issue 15): everything a session needs to go on in another process,
//! and its byte form.
//!
//! [`Device::capture`](crate::device::Device::capture) fills a [`HandoffState`] and
//! [`Device::restore`](crate::device::Device::restore) applies one; [`encode`] and [`decode`]
//! turn it into bytes and back. The bytes hold session keys: the runtime seals them before they
//! leave the process and wipes them after use ([`encode`] returns them `Zeroizing`). Times are
//! ages (durations before the capture), so the receiving process puts them on its own clock.
//! [`decode`] reads untrusted bytes: every length is checked and a bad value is an error,
//! never a panic.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use veil_dataplane::crypto::KeypairState;
use veil_dataplane::replay::WORDS as REPLAY_WORDS;
use zeroize::Zeroizing;

/// The byte form's version; another one is refused.
pub const FORMAT_VERSION: u8 = 1;

/// Most peers a state may hold (a bound on what untrusted bytes can make us allocate).
pub const MAX_PEERS: usize = 1 << 20;

/// The most bytes of a state before its peers, and of one peer (three keypairs with full
/// replay windows): [`encode`] reserves this much at once.
const HEADER_MAX: usize = 1 + 32 + 8 + 1 + 32 + 8 + 8 + 8;
const PEER_MAX: usize = 32 + 27 + 9 + 13 + 1 + 30 + 3 * KEYPAIR_MAX + 4 * 8 + 4 * 9;
const KEYPAIR_MAX: usize = 1 + 64 + 4 + 4 + 8 + 1 + 8 + 8 + 1 + REPLAY_WORDS * 9 + 1;

/// A device's sessions, as captured.
#[derive(Debug)]
pub struct HandoffState {
    /// The interface's public key: a state is restored only under the same private key.
    pub interface_public: [u8; 32],
    /// The wall clock at the capture: the restoring side (same host, same clock) adds the
    /// time the transfer took to every age.
    pub captured_at: SystemTime,
    /// The cookie secret and its age.
    pub cookie_secret: Option<(Zeroizing<[u8; 32]>, Duration)>,
    /// The next session id to hand out.
    pub next_session: u64,
    /// Every peer that had anything to carry.
    pub peers: Vec<PeerState>,
}

/// One peer's part of a [`HandoffState`].
#[derive(Debug, Default)]
pub struct PeerState {
    /// The peer's public key (how the restoring side finds it in its config).
    pub public_key: [u8; 32],
    /// Where it was last heard from.
    pub endpoint: Option<SocketAddr>,
    /// Age of the last completed handshake.
    pub last_handshake: Option<Duration>,
    /// The newest TAI64N accepted from it.
    pub last_timestamp: Option<[u8; 12]>,
    /// It speaks veil's control frames.
    pub veil_peer: bool,
    /// Its live session.
    pub session: Option<SessionCarry>,
    /// The keypair slots: current, previous, next.
    pub keypairs: [Option<KeypairState>; 3],
    /// Traffic counters and last-packet ages.
    pub stats: StatsCarry,
}

/// A live session.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionCarry {
    /// Its id.
    pub id: u64,
    /// Its age.
    pub age: Duration,
    /// Migrations accepted.
    pub migrations: u32,
    /// Age of the last one.
    pub last_migration: Option<Duration>,
}

/// A peer's statistics, in `PeerStats`'s order.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatsCarry {
    /// Bytes received, bytes sent, data packets received, data packets sent.
    pub counts: [u64; 4],
    /// Ages of the last packet received (any kind), the last data packet received, the last
    /// packet sent (any kind) and the last data packet sent.
    pub last: [Option<Duration>; 4],
}

/// Why bytes are not a [`HandoffState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the state does.
    Truncated,
    /// Another format version.
    Version(u8),
    /// A field holds a value it cannot have.
    Invalid(&'static str),
    /// Bytes are left after the state.
    Trailing,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("the hand-off state is cut short"),
            DecodeError::Version(v) => write!(
                f,
                "the hand-off state has format version {v}, this veil reads {FORMAT_VERSION}"
            ),
            DecodeError::Invalid(what) => write!(f, "the hand-off state has an invalid {what}"),
            DecodeError::Trailing => f.write_str("bytes follow the hand-off state"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The state's bytes (wiped when dropped).
pub fn encode(state: &HandoffState) -> Zeroizing<Vec<u8>> {
    // Room for the largest form up front: a buffer that grew would leave key bytes behind in
    // the memory it gave back, where zeroizing the final one cannot reach them.
    let mut w = Writer(Zeroizing::new(Vec::with_capacity(
        HEADER_MAX + state.peers.len() * PEER_MAX,
    )));
    w.u8(FORMAT_VERSION);
    w.bytes(&state.interface_public);
    w.duration(
        state
            .captured_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    );
    match &state.cookie_secret {
        Some((secret, age)) => {
            w.u8(1);
            w.bytes(&secret[..]);
            w.duration(*age);
        }
        None => w.u8(0),
    }
    w.u64(state.next_session);
    w.u64(state.peers.len() as u64);
    for p in &state.peers {
        w.peer(p);
    }
    w.0
}

/// The state in `bytes` (untrusted: see the module docs).
pub fn decode(bytes: &[u8]) -> Result<HandoffState, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let interface_public = r.array::<32>()?;
    let captured_at = UNIX_EPOCH
        .checked_add(r.duration()?)
        .ok_or(DecodeError::Invalid("capture time"))?;
    let cookie_secret = match r.u8()? {
        0 => None,
        1 => {
            let secret = Zeroizing::new(r.array::<32>()?);
            Some((secret, r.duration()?))
        }
        _ => return Err(DecodeError::Invalid("cookie secret tag")),
    };
    let next_session = r.u64()?;
    let count = usize::try_from(r.u64()?).map_err(|_| DecodeError::Invalid("peer count"))?;
    if count > MAX_PEERS {
        return Err(DecodeError::Invalid("peer count"));
    }
    // A peer takes at least 32 bytes: no more room is reserved than the input can fill.
    let mut peers = Vec::with_capacity(count.min(r.left() / 32));
    for _ in 0..count {
        peers.push(r.peer()?);
    }
    if r.left() != 0 {
        return Err(DecodeError::Trailing);
    }
    Ok(HandoffState {
        interface_public,
        captured_at,
        cookie_secret,
        next_session,
        peers,
    })
}

struct Writer(Zeroizing<Vec<u8>>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    fn duration(&mut self, d: Duration) {
        self.u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
    fn opt_duration(&mut self, d: Option<Duration>) {
        match d {
            Some(d) => {
                self.u8(1);
                self.duration(d);
            }
            None => self.u8(0),
        }
    }
    fn addr(&mut self, a: Option<SocketAddr>) {
        match a {
            None => self.u8(0),
            Some(SocketAddr::V4(a)) => {
                self.u8(4);
                self.bytes(&a.ip().octets());
                self.bytes(&a.port().to_le_bytes());
            }
            Some(SocketAddr::V6(a)) => {
                self.u8(6);
                self.bytes(&a.ip().octets());
                self.bytes(&a.port().to_le_bytes());
                self.u32(a.flowinfo());
                self.u32(a.scope_id());
            }
        }
    }
    fn keypair(&mut self, k: &Option<KeypairState>) {
        let Some(k) = k else {
            self.u8(0);
            return;
        };
        self.u8(1);
        self.bytes(&k.keys[..]);
        self.u32(k.local_index);
        self.u32(k.remote_index);
        self.duration(k.age);
        self.u8(u8::from(k.initiator));
        self.u64(k.sent);
        self.u64(k.replay_next);
        // Only the words with a bit set (an idle session's window is mostly empty).
        let set = k.replay_bitmap.iter().filter(|w| **w != 0).count();
        self.u8(u8::try_from(set).unwrap_or(u8::MAX));
        for (i, w) in k.replay_bitmap.iter().enumerate().filter(|(_, w)| **w != 0) {
            self.u8(u8::try_from(i).unwrap_or(u8::MAX));
            self.u64(*w);
        }
        self.u8(u8::from(k.confirmed));
    }
    fn peer(&mut self, p: &PeerState) {
        self.bytes(&p.public_key);
        self.addr(p.endpoint);
        self.opt_duration(p.last_handshake);
        match p.last_timestamp {
            Some(ts) => {
                self.u8(1);
                self.bytes(&ts);
            }
            None => self.u8(0),
        }
        self.u8(u8::from(p.veil_peer));
        match p.session {
            Some(s) => {
                self.u8(1);
                self.u64(s.id);
                self.duration(s.age);
                self.u32(s.migrations);
                self.opt_duration(s.last_migration);
            }
            None => self.u8(0),
        }
        for k in &p.keypairs {
            self.keypair(k);
        }
        for v in p.stats.counts {
            self.u64(v);
        }
        for d in p.stats.last {
            self.opt_duration(d);
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError::Truncated)?;
        let out = self.bytes.get(self.at..end).ok_or(DecodeError::Truncated)?;
        self.at = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid(what)),
        }
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn duration(&mut self) -> Result<Duration, DecodeError> {
        Ok(Duration::from_nanos(self.u64()?))
    }
    fn opt_duration(&mut self) -> Result<Option<Duration>, DecodeError> {
        Ok(if self.flag("duration tag")? {
            Some(self.duration()?)
        } else {
            None
        })
    }
    fn addr(&mut self) -> Result<Option<SocketAddr>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            4 => {
                let ip = Ipv4Addr::from(self.array::<4>()?);
                let port = self.u16()?;
                Ok(Some(SocketAddrV4::new(ip, port).into()))
            }
            6 => {
                let ip = Ipv6Addr::from(self.array::<16>()?);
                let port = self.u16()?;
                let flow = self.u32()?;
                let scope = self.u32()?;
                Ok(Some(SocketAddrV6::new(ip, port, flow, scope).into()))
            }
            _ => Err(DecodeError::Invalid("endpoint tag")),
        }
    }
    fn keypair(&mut self) -> Result<Option<KeypairState>, DecodeError> {
        if !self.flag("keypair tag")? {
            return Ok(None);
        }
        let mut keys = Zeroizing::new([0u8; 64]);
        keys.copy_from_slice(self.take(64)?);
        let local_index = self.u32()?;
        let remote_index = self.u32()?;
        let age = self.duration()?;
        let initiator = self.flag("initiator flag")?;
        let sent = self.u64()?;
        let replay_next = self.u64()?;
        let mut replay_bitmap = [0u64; REPLAY_WORDS];
        let set = usize::from(self.u8()?);
        if set > REPLAY_WORDS {
            return Err(DecodeError::Invalid("replay window"));
        }
        for _ in 0..set {
            let i = usize::from(self.u8()?);
            let w = replay_bitmap
                .get_mut(i)
                .ok_or(DecodeError::Invalid("replay window word"))?;
            *w = self.u64()?;
        }
        let confirmed = self.flag("confirmed flag")?;
        Ok(Some(KeypairState {
            keys,
            local_index,
            remote_index,
            age,
            initiator,
            sent,
            replay_next,
            replay_bitmap,
            confirmed,
        }))
    }
    fn peer(&mut self) -> Result<PeerState, DecodeError> {
        let public_key = self.array::<32>()?;
        let endpoint = self.addr()?;
        let last_handshake = self.opt_duration()?;
        let last_timestamp = if self.flag("timestamp tag")? {
            Some(self.array::<12>()?)
        } else {
            None
        };
        let veil_peer = self.flag("veil peer flag")?;
        let session = if self.flag("session tag")? {
            Some(SessionCarry {
                id: self.u64()?,
                age: self.duration()?,
                migrations: self.u32()?,
                last_migration: self.opt_duration()?,
            })
        } else {
            None
        };
        let keypairs = [self.keypair()?, self.keypair()?, self.keypair()?];
        let mut stats = StatsCarry::default();
        for v in &mut stats.counts {
            *v = self.u64()?;
        }
        for d in &mut stats.last {
            *d = self.opt_duration()?;
        }
        Ok(PeerState {
            public_key,
            endpoint,
            last_handshake,
            last_timestamp,
            veil_peer,
            session,
            keypairs,
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(seed: u8) -> KeypairState {
        let mut bitmap = [0u64; REPLAY_WORDS];
        bitmap[3] = 0xdead_beef;
        KeypairState {
            keys: Zeroizing::new([seed; 64]),
            local_index: u32::from(seed) * 7,
            remote_index: u32::from(seed) * 11,
            age: Duration::from_millis(1500),
            initiator: seed % 2 == 0,
            sent: 12345,
            replay_next: 99,
            replay_bitmap: bitmap,
            confirmed: true,
        }
    }

    fn state() -> HandoffState {
        HandoffState {
            interface_public: [9; 32],
            captured_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            cookie_secret: Some((Zeroizing::new([4; 32]), Duration::from_secs(3))),
            next_session: 17,
            peers: vec![
                PeerState {
                    public_key: [1; 32],
                    endpoint: Some("192.0.2.1:51820".parse().unwrap_or_else(|_| unreachable!())),
                    last_handshake: Some(Duration::from_secs(5)),
                    last_timestamp: Some([7; 12]),
                    veil_peer: true,
                    session: Some(SessionCarry {
                        id: 3,
                        age: Duration::from_secs(9),
                        migrations: 1,
                        last_migration: Some(Duration::from_secs(2)),
                    }),
                    keypairs: [Some(keypair(2)), None, Some(keypair(3))],
                    stats: StatsCarry {
                        counts: [1000, 2000, 0, 0],
                        last: [Some(Duration::from_millis(3)), None, None, None],
                    },
                },
                PeerState {
                    public_key: [2; 32],
                    endpoint: Some("[2001:db8::1]:7".parse().unwrap_or_else(|_| unreachable!())),
                    ..PeerState::default()
                },
            ],
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let s = state();
        let bytes = encode(&s);
        let back = decode(&bytes).expect("decodes");
        assert_eq!(back.interface_public, s.interface_public);
        assert_eq!(back.next_session, 17);
        assert_eq!(back.captured_at, s.captured_at);
        assert_eq!(back.peers.len(), 2);
        let (a, b) = (&back.peers[0], &s.peers[0]);
        assert_eq!(a.endpoint, b.endpoint);
        assert_eq!(a.last_handshake, b.last_handshake);
        assert_eq!(a.last_timestamp, b.last_timestamp);
        assert_eq!(a.session.map(|s| s.id), Some(3));
        let k = a.keypairs[0].as_ref().expect("current");
        assert_eq!(&k.keys[..], &[2u8; 64][..]);
        assert_eq!(
            (k.sent, k.replay_next, k.replay_bitmap[3]),
            (12345, 99, 0xdead_beef)
        );
        assert!(a.keypairs[1].is_none());
        assert_eq!(a.stats.counts, [1000, 2000, 0, 0]);
        assert_eq!(a.stats.last[0], Some(Duration::from_millis(3)));
        assert_eq!(back.peers[1].endpoint, s.peers[1].endpoint);
        // The same bytes again: the encoding is a function of the state.
        assert_eq!(&encode(&back)[..], &bytes[..]);
    }

    #[test]
    fn the_largest_form_fits_what_encode_reserves() {
        let mut s = state();
        for p in &mut s.peers {
            p.endpoint = Some("[2001:db8::1]:7".parse().unwrap_or_else(|_| unreachable!()));
            p.keypairs = [Some(keypair(1)), Some(keypair(2)), Some(keypair(3))];
            for k in p.keypairs.iter_mut().flatten() {
                k.replay_bitmap = [u64::MAX; REPLAY_WORDS];
            }
        }
        let bytes = encode(&s);
        assert!(bytes.len() <= HEADER_MAX + s.peers.len() * PEER_MAX);
        assert_eq!(bytes.capacity(), HEADER_MAX + s.peers.len() * PEER_MAX);
    }

    #[test]
    fn every_truncation_and_bad_tag_is_an_error() {
        let bytes = encode(&state());
        for n in 0..bytes.len() {
            assert!(
                decode(&bytes[..n]).is_err(),
                "accepted {n} of {} bytes",
                bytes.len()
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(decode(&longer).err(), Some(DecodeError::Trailing));
        let mut version = bytes.to_vec();
        version[0] = 2;
        assert_eq!(decode(&version).err(), Some(DecodeError::Version(2)));
        let mut tag = bytes.to_vec();
        tag[41] = 7;
        assert_eq!(
            decode(&tag).err(),
            Some(DecodeError::Invalid("cookie secret tag"))
        );
    }

    #[test]
    fn a_huge_peer_count_is_refused_without_allocating_it() {
        let mut s = state();
        s.peers.clear();
        let mut bytes = encode(&s).to_vec();
        let at = bytes.len() - 8;
        bytes[at..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&bytes).is_err());
        bytes[at..].copy_from_slice(&(MAX_PEERS as u64).to_le_bytes());
        assert_eq!(decode(&bytes).err(), Some(DecodeError::Truncated));
    }
}
