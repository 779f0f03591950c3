//! TAI64N timestamps as WireGuard sends them in handshake initiations.
//!
//! Twelve bytes: big-endian seconds plus `0x400000000000000a`, then big-endian nanoseconds.
//! Like the kernel and wireguard-go, the nanoseconds are rounded down to a multiple of
//! 2^24 ns (about 16.8 ms, the largest power of two below the 20 ms minimum between
//! initiations), so the timestamp does not leak a fine-grained clock to anyone who can
//! decrypt it. Because the encoding is big-endian, comparing the bytes compares the times.

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an encoded timestamp.
pub const TAI64N_LEN: usize = 12;

/// Label added to UNIX seconds: 2^62 plus the 10 s TAI offset of 1970, as WireGuard uses it.
const BASE: u64 = 0x4000_0000_0000_000a;
/// Nanosecond bits cleared for whitening.
const WHITENER_MASK: u32 = (1 << 24) - 1;

/// A TAI64N timestamp. `Ord` follows time because the bytes are big-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tai64n([u8; TAI64N_LEN]);

impl Tai64n {
    /// The whitened timestamp of `wall`. Times before 1970 are clamped to the epoch: a host
    /// clock that far off cannot make a handshake that peers accept anyway.
    pub fn from_system_time(wall: SystemTime) -> Self {
        let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = BASE.wrapping_add(since.as_secs());
        let nanos = since.subsec_nanos() & !WHITENER_MASK;
        let mut b = [0u8; TAI64N_LEN];
        b[..8].copy_from_slice(&secs.to_be_bytes());
        b[8..].copy_from_slice(&nanos.to_be_bytes());
        Self(b)
    }

    /// Wrap received bytes; any 12 bytes are a comparable timestamp.
    pub const fn from_bytes(bytes: [u8; TAI64N_LEN]) -> Self {
        Self(bytes)
    }

    /// The encoded bytes.
    pub const fn to_bytes(self) -> [u8; TAI64N_LEN] {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn layout_and_whitening() {
        let t = UNIX_EPOCH + Duration::new(0x5f00_0000, 0x0123_4567);
        let b = Tai64n::from_system_time(t).to_bytes();
        assert_eq!(&b[..8], &[0x40, 0, 0, 0, 0x5f, 0, 0, 0x0a]);
        // 0x01234567 with the low 24 bits cleared.
        assert_eq!(&b[8..], &[0x01, 0, 0, 0]);
    }

    #[test]
    fn order_follows_time_at_whitened_granularity() {
        let t0 = UNIX_EPOCH + Duration::new(1_700_000_000, 0);
        let a = Tai64n::from_system_time(t0);
        // Within one 2^24 ns step the timestamp does not move.
        assert_eq!(a, Tai64n::from_system_time(t0 + Duration::from_millis(16)));
        assert!(a < Tai64n::from_system_time(t0 + Duration::from_millis(17)));
        assert!(a < Tai64n::from_system_time(t0 + Duration::from_secs(1)));
        assert!(
            Tai64n::from_system_time(t0 + Duration::new(0, 999_999_999))
                < Tai64n::from_system_time(t0 + Duration::from_secs(1))
        );
    }

    #[test]
    fn before_epoch_clamps() {
        let t = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(
            Tai64n::from_system_time(t),
            Tai64n::from_system_time(UNIX_EPOCH)
        );
    }
}
