//! Every backend against every other: the same bytes out, each other's output opened, and every
//! tampered message rejected. Used by the unit tests and by the `aead_backends` fuzz target.

use std::fmt;

use super::{Backend, Cipher, TransportAead, BACKENDS};
use crate::wire::TAG_LEN;

/// How the backends disagreed on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disagreement {
    /// `backend` sealed to other ciphertext or another tag than the first backend.
    Sealed {
        /// The backend that differs from [`BACKENDS`]`[0]`.
        backend: Backend,
    },
    /// `opener` refused (or opened to other bytes) what `sealer` sealed.
    Opened {
        /// Who sealed.
        sealer: Backend,
        /// Who failed to open it.
        opener: Backend,
    },
    /// `backend` accepted the message with `bit` of ciphertext-then-tag flipped.
    TamperAccepted {
        /// The backend that accepted it.
        backend: Backend,
        /// Bit index into ciphertext followed by tag.
        bit: usize,
    },
}

impl fmt::Display for Disagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disagreement::Sealed { backend } => {
                write!(f, "{backend} sealed different bytes than {}", BACKENDS[0])
            }
            Disagreement::Opened { sealer, opener } => {
                write!(f, "{opener} did not open what {sealer} sealed")
            }
            Disagreement::TamperAccepted { backend, bit } => {
                write!(f, "{backend} accepted the message with bit {bit} flipped")
            }
        }
    }
}

impl std::error::Error for Disagreement {}

/// Seal `plain` under `key` and `counter` with every backend and check that all agree, open
/// each other's output to `plain`, and all reject the message with any one of `flips` (bit
/// indices into ciphertext followed by tag, taken modulo its length in bits) flipped.
pub fn compare_backends(
    key: &[u8; 32],
    counter: u64,
    plain: &[u8],
    flips: &[usize],
) -> Result<(), Disagreement> {
    let ciphers = BACKENDS.map(|b| Cipher::with_backend(b, key));
    let sealed: Vec<(Vec<u8>, [u8; TAG_LEN])> = ciphers
        .iter()
        .map(|c| {
            let mut data = plain.to_vec();
            let tag = c.seal(counter, &mut data);
            (data, tag)
        })
        .collect();
    let reference = &sealed[0];
    for (cipher, out) in ciphers.iter().zip(&sealed) {
        if out != reference {
            return Err(Disagreement::Sealed {
                backend: cipher.backend(),
            });
        }
    }
    for (sealer, (data, tag)) in ciphers.iter().zip(&sealed) {
        for opener in &ciphers {
            let mut buf = data.clone();
            if opener.open(counter, &mut buf, tag).is_err() || buf != plain {
                return Err(Disagreement::Opened {
                    sealer: sealer.backend(),
                    opener: opener.backend(),
                });
            }
        }
    }
    let (data, tag) = reference;
    let bits = (data.len() + TAG_LEN) * 8;
    for &flip in flips {
        let bit = flip % bits;
        let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
        for opener in &ciphers {
            let (mut buf, mut t) = (data.clone(), *tag);
            match buf.get_mut(byte) {
                Some(b) => *b ^= mask,
                None => {
                    if let Some(b) = t.get_mut(byte - data.len()) {
                        *b ^= mask;
                    }
                }
            }
            if opener.open(counter, &mut buf, &t).is_ok() {
                return Err(Disagreement::TamperAccepted {
                    backend: opener.backend(),
                    bit,
                });
            }
        }
    }
    Ok(())
}
