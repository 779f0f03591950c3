//! Zero-copy views of the WireGuard messages and of veil control frames.
//!
//! Each view wraps a byte buffer; `new_checked` validates length and type once,
//! after which no accessor can panic. Setters exist only for `T: AsMut<[u8]>`.
//! Layouts are specified byte by byte in docs/PROTOCOL.md.

use std::fmt;

/// Message type of a handshake initiation.
pub const TYPE_INITIATION: u8 = 1;
/// Message type of a handshake response.
pub const TYPE_RESPONSE: u8 = 2;
/// Message type of a cookie reply.
pub const TYPE_COOKIE_REPLY: u8 = 3;
/// Message type of a transport data message.
pub const TYPE_TRANSPORT: u8 = 4;

/// Size of a handshake initiation.
pub const INITIATION_LEN: usize = 148;
/// Size of a handshake response.
pub const RESPONSE_LEN: usize = 92;
/// Size of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 64;
/// Header of a transport message: type, reserved, receiver index, counter.
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Smallest transport message: header and the tag of an empty (keepalive) payload.
pub const TRANSPORT_MIN_LEN: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
/// Offset of MAC1 in the two handshake messages, counted from their end.
pub const MACS_LEN: usize = 32;

/// Why a buffer is not the message it was asked to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the message requires (or, for fixed-size messages, not exactly its size).
    Length,
    /// The type/reserved word is not the expected one.
    Type,
    /// A veil control frame with an unknown kind, version or inconsistent length.
    Frame,
}

crate::fixed_messages!(WireError {
    Length => "message has the wrong length",
    Type => "message type or reserved bytes are wrong",
    Frame => "malformed veil control frame",
});

/// Classify a datagram by its type word without validating the rest.
/// The type is a little-endian u32 whose upper three bytes must be zero.
pub fn message_type(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [t @ 1..=4, 0, 0, 0, ..] => Some(*t),
        _ => None,
    }
}

fn read_u32_le(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn read_u64_le(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn array<const N: usize>(b: &[u8], at: usize) -> &[u8; N] {
    // Lengths are validated by `new_checked`; a failure here is a bug in this file.
    b[at..at + N]
        .try_into()
        .expect("length checked in new_checked")
}

fn array_mut<const N: usize>(b: &mut [u8], at: usize) -> &mut [u8; N] {
    (&mut b[at..at + N])
        .try_into()
        .expect("length checked in new_checked")
}

macro_rules! fixed_message {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub struct $name<T: AsRef<[u8]>> {
            buf: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wrap `buf` after checking its exact length and type word.
            pub fn new_checked(buf: T) -> Result<Self, WireError> {
                let b = buf.as_ref();
                if b.len() != $len {
                    return Err(WireError::Length);
                }
                if message_type(b) != Some($ty) {
                    return Err(WireError::Type);
                }
                Ok(Self { buf })
            }

            /// The whole message.
            pub fn as_bytes(&self) -> &[u8] {
                self.buf.as_ref()
            }

            /// Give the buffer back.
            pub fn into_inner(self) -> T {
                self.buf
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Wrap a buffer of exactly the right size and write the type word into it.
            pub fn new_init(mut buf: T) -> Result<Self, WireError> {
                let b = buf.as_mut();
                if b.len() != $len {
                    return Err(WireError::Length);
                }
                b[..4].copy_from_slice(&u32::from($ty).to_le_bytes());
                Ok(Self { buf })
            }

            /// The whole message, writable.
            pub fn as_bytes_mut(&mut self) -> &mut [u8] {
                self.buf.as_mut()
            }
        }

        impl<T: AsRef<[u8]>> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("len", &self.buf.as_ref().len()).finish()
            }
        }
    };
}

macro_rules! field {
    (get $get:ident, u32, $at:expr) => {
        #[allow(missing_docs)]
        pub fn $get(&self) -> u32 {
            read_u32_le(self.buf.as_ref(), $at)
        }
    };
    (get $get:ident, [$n:expr], $at:expr) => {
        #[allow(missing_docs)]
        pub fn $get(&self) -> &[u8; $n] {
            array::<$n>(self.buf.as_ref(), $at)
        }
    };
    (set $set:ident, u32, $at:expr) => {
        #[allow(missing_docs)]
        pub fn $set(&mut self, v: u32) {
            self.buf.as_mut()[$at..$at + 4].copy_from_slice(&v.to_le_bytes());
        }
    };
    (set $set:ident, [$n:expr], $at:expr) => {
        #[allow(missing_docs)]
        pub fn $set(&mut self) -> &mut [u8; $n] {
            array_mut::<$n>(self.buf.as_mut(), $at)
        }
    };
}

/// A message's field table, one row per field (reader, writer: `u32` or `[len]` at a byte
/// offset), so each offset is written once for both accessors.
macro_rules! fields {
    ($msg:ident { $($get:ident, $set:ident: $kind:tt @ $at:expr;)* }) => {
        impl<T: AsRef<[u8]>> $msg<T> {
            $(field!(get $get, $kind, $at);)*
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $msg<T> {
            $(field!(set $set, $kind, $at);)*
        }
    };
}

/// MAC1 and MAC2: the last [`MACS_LEN`] bytes of a handshake message of `$len` bytes
/// (what [`mac1_input`] and [`mac2_input`] cut off).
macro_rules! macs {
    ($msg:ident, $len:expr) => {
        fields!($msg {
            mac1, mac1_mut: [16] @ $len - MACS_LEN;
            mac2, mac2_mut: [16] @ $len - MACS_LEN / 2;
        });
    };
}

fixed_message!(
    /// Handshake initiation (type 1, 148 bytes).
    Initiation, TYPE_INITIATION, INITIATION_LEN
);
fixed_message!(
    /// Handshake response (type 2, 92 bytes).
    Response, TYPE_RESPONSE, RESPONSE_LEN
);
fixed_message!(
    /// Cookie reply (type 3, 64 bytes).
    CookieReply, TYPE_COOKIE_REPLY, COOKIE_REPLY_LEN
);

fields!(Initiation {
    sender_index, set_sender_index: u32 @ 4;
    ephemeral, ephemeral_mut: [32] @ 8;
    encrypted_static, encrypted_static_mut: [48] @ 40;
    encrypted_timestamp, encrypted_timestamp_mut: [28] @ 88;
});
macs!(Initiation, INITIATION_LEN);

fields!(Response {
    sender_index, set_sender_index: u32 @ 4;
    receiver_index, set_receiver_index: u32 @ 8;
    ephemeral, ephemeral_mut: [32] @ 12;
    encrypted_nothing, encrypted_nothing_mut: [16] @ 44;
});
macs!(Response, RESPONSE_LEN);

fields!(CookieReply {
    receiver_index, set_receiver_index: u32 @ 4;
    nonce, nonce_mut: [24] @ 8;
    encrypted_cookie, encrypted_cookie_mut: [32] @ 32;
});

/// The bytes of a handshake message covered by MAC1 (everything before it).
pub fn mac1_input(msg: &[u8]) -> &[u8] {
    &msg[..msg.len().saturating_sub(MACS_LEN)]
}

/// The bytes of a handshake message covered by MAC2 (everything before it).
pub fn mac2_input(msg: &[u8]) -> &[u8] {
    &msg[..msg.len().saturating_sub(MACS_LEN / 2)]
}

/// Transport data message (type 4): header, encrypted payload, tag.
#[derive(Clone, Copy)]
pub struct Transport<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Transport<T> {
    /// Wrap `buf` after checking the type word and the minimum length.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < TRANSPORT_MIN_LEN {
            return Err(WireError::Length);
        }
        if message_type(b) != Some(TYPE_TRANSPORT) {
            return Err(WireError::Type);
        }
        Ok(Self { buf })
    }

    /// Index the receiver chose for this session.
    pub fn receiver_index(&self) -> u32 {
        read_u32_le(self.buf.as_ref(), 4)
    }

    /// The 64-bit counter, which is also the AEAD nonce.
    pub fn counter(&self) -> u64 {
        read_u64_le(self.buf.as_ref(), 8)
    }

    /// Encrypted payload followed by the tag.
    pub fn ciphertext(&self) -> &[u8] {
        &self.buf.as_ref()[TRANSPORT_HEADER_LEN..]
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Transport<T> {
    /// Write the header (type word, receiver, counter) into a buffer that is at least
    /// `TRANSPORT_MIN_LEN` long.
    pub fn new_init(mut buf: T, receiver_index: u32, counter: u64) -> Result<Self, WireError> {
        let b = buf.as_mut();
        if b.len() < TRANSPORT_MIN_LEN {
            return Err(WireError::Length);
        }
        b[..4].copy_from_slice(&u32::from(TYPE_TRANSPORT).to_le_bytes());
        b[4..8].copy_from_slice(&receiver_index.to_le_bytes());
        b[8..16].copy_from_slice(&counter.to_le_bytes());
        Ok(Self { buf })
    }

    /// Encrypted payload followed by the tag, writable.
    pub fn ciphertext_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[TRANSPORT_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for Transport<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("receiver_index", &self.receiver_index())
            .field("counter", &self.counter())
            .field("len", &self.buf.as_ref().len())
            .finish()
    }
}

/// Marker nibble of a veil control frame: an IP packet never starts with it.
pub const FRAME_NIBBLE: u8 = 0xF0;
/// Version byte of the control frames defined here.
pub const FRAME_VERSION: u8 = 1;
/// Kind byte, version byte, 2-byte big-endian body length.
pub const FRAME_HEADER_LEN: usize = 4;
/// Length of an opaque migration token.
pub const MIGRATION_TOKEN_LEN: usize = 40;

/// Is this decrypted transport payload a veil control frame (first byte 0xF_)?
pub fn is_control_frame(payload: &[u8]) -> bool {
    matches!(payload.first(), Some(b) if b & 0xF0 == FRAME_NIBBLE)
}

/// The veil control frames (decrypted payloads of transport messages).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ControlFrame {
    /// The session will expire for idleness in `seconds_left` seconds unless data flows.
    IdleWarning {
        /// Seconds until the session is expired.
        seconds_left: u32,
    },
    /// The gateway is shutting down; reconnect after `retry_after_ms`.
    DrainNotice {
        /// Milliseconds until the gateway expects to accept handshakes again (0: unknown).
        retry_after_ms: u32,
    },
    /// Client asks for a migration token.
    MigrationTokenRequest,
    /// Gateway grants a single-use migration token.
    MigrationTokenGrant {
        /// How long the token stays valid.
        ttl_sec: u32,
        /// Opaque token, to be echoed in [`ControlFrame::Migrate`].
        token: [u8; MIGRATION_TOKEN_LEN],
    },
    /// Client moved; here is its token, sent from the new address.
    Migrate {
        /// Token from an earlier grant.
        token: [u8; MIGRATION_TOKEN_LEN],
    },
    /// The session ends now; `reason` is one of the `GOODBYE_*` codes.
    Goodbye {
        /// Why the sender ends the session.
        reason: u8,
    },
    /// Liveness probe: a veil peer answers with a keepalive at once; a standard
    /// WireGuard peer drops it but answers with its passive keepalive.
    Probe,
}

impl fmt::Debug for ControlFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tokens are bearer credentials: never print them.
        match self {
            Self::IdleWarning { seconds_left } => write!(f, "IdleWarning({seconds_left}s)"),
            Self::DrainNotice { retry_after_ms } => write!(f, "DrainNotice({retry_after_ms}ms)"),
            Self::MigrationTokenRequest => f.write_str("MigrationTokenRequest"),
            Self::MigrationTokenGrant { ttl_sec, .. } => {
                write!(f, "MigrationTokenGrant({ttl_sec}s)")
            }
            Self::Migrate { .. } => f.write_str("Migrate"),
            Self::Goodbye { reason } => write!(f, "Goodbye({reason})"),
            Self::Probe => f.write_str("Probe"),
        }
    }
}

/// Goodbye reason: the peer shuts down normally.
pub const GOODBYE_SHUTDOWN: u8 = 0;
/// Goodbye reason: the session expired (idle or absolute timeout).
pub const GOODBYE_EXPIRED: u8 = 1;
/// Goodbye reason: an operator or abuse policy ended the session.
pub const GOODBYE_TERMINATED: u8 = 2;

const KIND_IDLE_WARNING: u8 = 0xF1;
const KIND_DRAIN_NOTICE: u8 = 0xF2;
const KIND_TOKEN_REQUEST: u8 = 0xF3;
const KIND_TOKEN_GRANT: u8 = 0xF4;
const KIND_MIGRATE: u8 = 0xF5;
const KIND_GOODBYE: u8 = 0xF6;
const KIND_PROBE: u8 = 0xF7;

impl ControlFrame {
    /// Length of the encoded frame (before transport padding).
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.body_len()
    }

    fn body_len(&self) -> usize {
        match self {
            Self::IdleWarning { .. } | Self::DrainNotice { .. } => 4,
            Self::MigrationTokenRequest | Self::Probe => 0,
            Self::MigrationTokenGrant { .. } => 4 + MIGRATION_TOKEN_LEN,
            Self::Migrate { .. } => MIGRATION_TOKEN_LEN,
            Self::Goodbye { .. } => 1,
        }
    }

    /// Encode into `out`; returns the number of bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = self.encoded_len();
        let out = out.get_mut(..len).ok_or(WireError::Length)?;
        let kind = match self {
            Self::IdleWarning { .. } => KIND_IDLE_WARNING,
            Self::DrainNotice { .. } => KIND_DRAIN_NOTICE,
            Self::MigrationTokenRequest => KIND_TOKEN_REQUEST,
            Self::MigrationTokenGrant { .. } => KIND_TOKEN_GRANT,
            Self::Migrate { .. } => KIND_MIGRATE,
            Self::Goodbye { .. } => KIND_GOODBYE,
            Self::Probe => KIND_PROBE,
        };
        let (head, body) = out.split_at_mut(FRAME_HEADER_LEN);
        head[0] = kind;
        head[1] = FRAME_VERSION;
        // Body lengths are at most 44 bytes, far below u16::MAX.
        head[2..4].copy_from_slice(&(self.body_len() as u16).to_be_bytes());
        match self {
            Self::IdleWarning { seconds_left: v } | Self::DrainNotice { retry_after_ms: v } => {
                body.copy_from_slice(&v.to_be_bytes())
            }
            Self::MigrationTokenRequest | Self::Probe => {}
            Self::MigrationTokenGrant { ttl_sec, token } => {
                body[..4].copy_from_slice(&ttl_sec.to_be_bytes());
                body[4..].copy_from_slice(token);
            }
            Self::Migrate { token } => body.copy_from_slice(token),
            Self::Goodbye { reason } => body[0] = *reason,
        }
        Ok(len)
    }

    /// Parse a decrypted payload (trailing zero padding allowed).
    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        let head = payload.get(..FRAME_HEADER_LEN).ok_or(WireError::Length)?;
        if head[1] != FRAME_VERSION || head[0] & 0xF0 != FRAME_NIBBLE {
            return Err(WireError::Frame);
        }
        let body_len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let body = payload
            .get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + body_len)
            .ok_or(WireError::Length)?;
        let be32 = |b: &[u8]| -> Result<u32, WireError> {
            let a: [u8; 4] = b.try_into().map_err(|_| WireError::Frame)?;
            Ok(u32::from_be_bytes(a))
        };
        let token = |b: &[u8]| -> Result<[u8; MIGRATION_TOKEN_LEN], WireError> {
            b.try_into().map_err(|_| WireError::Frame)
        };
        match head[0] {
            KIND_IDLE_WARNING => Ok(Self::IdleWarning {
                seconds_left: be32(body)?,
            }),
            KIND_DRAIN_NOTICE => Ok(Self::DrainNotice {
                retry_after_ms: be32(body)?,
            }),
            KIND_TOKEN_REQUEST if body.is_empty() => Ok(Self::MigrationTokenRequest),
            KIND_TOKEN_GRANT if body.len() == 4 + MIGRATION_TOKEN_LEN => {
                Ok(Self::MigrationTokenGrant {
                    ttl_sec: be32(&body[..4])?,
                    token: token(&body[4..])?,
                })
            }
            KIND_MIGRATE => Ok(Self::Migrate {
                token: token(body)?,
            }),
            KIND_GOODBYE if body.len() == 1 => Ok(Self::Goodbye { reason: body[0] }),
            KIND_PROBE if body.is_empty() => Ok(Self::Probe),
            _ => Err(WireError::Frame),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initiation_layout() {
        let mut buf = [0u8; INITIATION_LEN];
        let mut m = Initiation::new_init(&mut buf[..]).unwrap();
        m.set_sender_index(0x0403_0201);
        m.ephemeral_mut().fill(0xEE);
        m.mac2_mut().fill(0x22);
        assert_eq!(&buf[..8], &[1, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(buf[8], 0xEE);
        assert_eq!(buf[39], 0xEE);
        assert_eq!(buf[40], 0);
        assert_eq!(&buf[132..], &[0x22; 16]);
        let v = Initiation::new_checked(&buf[..]).unwrap();
        assert_eq!(v.sender_index(), 0x0403_0201);
        assert_eq!(mac1_input(&buf).len(), 116);
        assert_eq!(mac2_input(&buf).len(), 132);
    }

    #[test]
    fn response_and_cookie_layout() {
        let mut buf = [0u8; RESPONSE_LEN];
        let mut m = Response::new_init(&mut buf[..]).unwrap();
        m.set_sender_index(7);
        m.set_receiver_index(9);
        m.mac1_mut().fill(1);
        assert_eq!(&buf[..12], &[2, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0]);
        assert_eq!(&buf[60..76], &[1; 16]);
        let mut c = [0u8; COOKIE_REPLY_LEN];
        let mut m = CookieReply::new_init(&mut c[..]).unwrap();
        m.set_receiver_index(5);
        m.nonce_mut().fill(3);
        assert_eq!(&c[..8], &[3, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!(&c[8..32], &[3; 24]);
    }

    #[test]
    fn transport_layout() {
        let mut buf = [0u8; 48];
        Transport::new_init(&mut buf[..], 0xAABBCCDD, 0x0102030405060708).unwrap();
        assert_eq!(
            &buf[..16],
            &[4, 0, 0, 0, 0xDD, 0xCC, 0xBB, 0xAA, 8, 7, 6, 5, 4, 3, 2, 1]
        );
        let t = Transport::new_checked(&buf[..]).unwrap();
        assert_eq!(t.counter(), 0x0102030405060708);
        assert_eq!(t.ciphertext().len(), 32);
        assert_eq!(
            Transport::new_checked(&buf[..31]).unwrap_err(),
            WireError::Length
        );
    }

    #[test]
    fn wrong_type_or_reserved() {
        let mut buf = [0u8; INITIATION_LEN];
        buf[0] = 1;
        buf[2] = 1;
        assert_eq!(
            Initiation::new_checked(&buf[..]).unwrap_err(),
            WireError::Type
        );
        buf[2] = 0;
        buf[0] = 2;
        assert_eq!(
            Initiation::new_checked(&buf[..]).unwrap_err(),
            WireError::Type
        );
        assert_eq!(
            Initiation::new_checked(&buf[..100]).unwrap_err(),
            WireError::Length
        );
        assert_eq!(message_type(&[4, 0, 0]), None);
        assert_eq!(message_type(&[5, 0, 0, 0]), None);
    }

    #[test]
    fn control_frames_round_trip() {
        let frames = [
            ControlFrame::IdleWarning { seconds_left: 30 },
            ControlFrame::DrainNotice {
                retry_after_ms: 5000,
            },
            ControlFrame::MigrationTokenRequest,
            ControlFrame::MigrationTokenGrant {
                ttl_sec: 300,
                token: [7; MIGRATION_TOKEN_LEN],
            },
            ControlFrame::Migrate {
                token: [9; MIGRATION_TOKEN_LEN],
            },
            ControlFrame::Goodbye {
                reason: GOODBYE_EXPIRED,
            },
        ];
        for f in frames {
            let mut out = [0u8; 64];
            let n = f.encode(&mut out).unwrap();
            assert!(is_control_frame(&out[..n]));
            // Transport padding adds zeros after the frame.
            assert_eq!(
                ControlFrame::parse(&out[..n.next_multiple_of(16)]).unwrap(),
                f
            );
            assert!(ControlFrame::parse(&out[..n - 1]).is_err() || n == FRAME_HEADER_LEN);
        }
        let mut out = [0u8; 8];
        ControlFrame::IdleWarning {
            seconds_left: 0x01020304,
        }
        .encode(&mut out)
        .unwrap();
        assert_eq!(out, [0xF1, 1, 0, 4, 1, 2, 3, 4]);
        assert!(!is_control_frame(&[0x45, 0]));
        assert!(!is_control_frame(&[0x60, 0]));
        assert_eq!(
            ControlFrame::parse(&[0xF9, 1, 0, 0]).unwrap_err(),
            WireError::Frame
        );
        assert_eq!(
            ControlFrame::parse(&[0xF1, 2, 0, 4, 0, 0, 0, 0]).unwrap_err(),
            WireError::Frame
        );
    }
}
