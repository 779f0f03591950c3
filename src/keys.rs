//! WireGuard keys in their text form, and key generation.
//!
//! The text form is what `wg genkey`, `wg pubkey` and wg-quick files use: standard base64 (RFC 4648
//! alphabet `A-Z a-z 0-9 + /`) with `=` padding, 44 characters for 32 bytes.
//!
//! ```ignore
//! let private = keys::generate_private()?;
//! let public = keys::public_from_private(private.as_bytes());
//! println!("{}", keys::encode_key(&public));
//! ```

#![deny(unsafe_code)]

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes in every WireGuard key (private, public, preshared).
pub const KEY_LEN: usize = 32;

/// Characters in the base64 text form of a key.
pub const KEY_TEXT_LEN: usize = 44;

/// Standard base64 that, like `wg`, ignores the two unused low bits of the last symbol.
///
/// `wg` itself accepts such non-canonical keys, so rejecting them would break files that work with
/// wg-quick. Encoding is always canonical.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// A secret 32-byte key (a private key or a preshared key).
///
/// Zeroized on drop; `Debug` prints `<redacted>` so a stray `{:?}` cannot leak it. There is
/// deliberately no `PartialEq`: comparing secrets with `==` is not constant-time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key32([u8; KEY_LEN]);

impl Key32 {
    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a key's text form was rejected.
///
/// Messages never include the text itself: it may be a private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Nothing but whitespace.
    Empty,
    /// Not 44 characters after trimming.
    WrongLength {
        /// Characters found.
        chars: usize,
    },
    /// A character outside the standard base64 alphabet.
    NotBase64 {
        /// 1-based character position in the trimmed text.
        position: usize,
    },
    /// 44 base64 characters, but not ending in exactly one `=`.
    BadPadding,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("key is empty"),
            Self::WrongLength { chars } => {
                write!(
                    f,
                    "key is {chars} characters long, a key has {KEY_TEXT_LEN}"
                )
            }
            Self::NotBase64 { position } => write!(
                f,
                "character {position} is not base64 (allowed: A-Z a-z 0-9 + / and a final =)"
            ),
            Self::BadPadding => f.write_str("key must end with exactly one '='"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Parses the text form of a key, ignoring surrounding whitespace.
///
/// Accepts exactly what `wg` accepts: 43 base64 characters followed by `=`.
pub fn parse_key(text: &str) -> Result<Key32, KeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    // Count characters, not bytes, so a stray non-ASCII character reports a sensible length.
    let chars = text.chars().count();
    if chars != KEY_TEXT_LEN {
        return Err(KeyError::WrongLength { chars });
    }
    // Checked by hand, before the decoder, to give a position without echoing the character.
    for (i, c) in text.chars().enumerate() {
        let is_last = i + 1 == KEY_TEXT_LEN;
        let ok = if is_last {
            c == '='
        } else {
            c.is_ascii_alphanumeric() || c == '+' || c == '/'
        };
        if !ok {
            return Err(if c == '=' || is_last {
                KeyError::BadPadding
            } else {
                KeyError::NotBase64 { position: i + 1 }
            });
        }
    }
    let mut bytes = [0u8; KEY_LEN];
    // Alphabet and length are already valid, so this cannot fail; map anyway rather than unwrap.
    let written = KEY_BASE64
        .decode_slice(text, &mut bytes)
        .map_err(|_| KeyError::BadPadding)?;
    if written != KEY_LEN {
        bytes.zeroize();
        return Err(KeyError::BadPadding);
    }
    let key = Key32(bytes);
    bytes.zeroize();
    Ok(key)
}

/// The text form of a key (44 characters of standard base64).
pub fn encode_key(bytes: &[u8; KEY_LEN]) -> String {
    KEY_BASE64.encode(bytes)
}

/// The system random number generator could not be read.
#[derive(Debug, Clone, Copy)]
pub struct RandomError(getrandom::Error);

impl fmt::Display for RandomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read random bytes from the kernel (getrandom): {}",
            self.0
        )
    }
}

impl std::error::Error for RandomError {}

fn random_key() -> Result<Key32, RandomError> {
    let mut key = Key32([0u8; KEY_LEN]);
    getrandom::getrandom(&mut key.0).map_err(RandomError)?;
    Ok(key)
}

/// A new X25519 private key, clamped exactly like `wg genkey` so its text form is interchangeable.
pub fn generate_private() -> Result<Key32, RandomError> {
    let mut key = random_key()?;
    key.0[0] &= 248;
    key.0[31] = (key.0[31] & 127) | 64;
    Ok(key)
}

/// A new preshared key: 32 uniformly random bytes, like `wg genpsk`.
pub fn generate_psk() -> Result<Key32, RandomError> {
    random_key()
}

/// The X25519 public key of a private key (scalar multiplication of the base point).
///
/// Clamping happens inside, so unclamped private keys give the same result as `wg pubkey`.
pub fn public_from_private(private: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    // StaticSecret zeroizes its copy on drop.
    let secret = StaticSecret::from(*private);
    PublicKey::from(&secret).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7748 §6.1, Alice. The private key is not clamped in the RFC; X25519 clamps internally.
    const ALICE_PRIVATE_HEX: &str =
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const ALICE_PUBLIC_HEX: &str =
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
    // The same keys in text form (checked with `wg pubkey`).
    const ALICE_PRIVATE_B64: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
    const ALICE_PUBLIC_B64: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

    // A pair made with `wg genkey | tee /dev/stderr | wg pubkey` (wireguard-tools 1.0.20210914).
    const WG_PRIVATE: &str = "eBiTrl6EfC2vnq98gbI9jxGR4xu+4tU4WO1bG/GKOlo=";
    const WG_PUBLIC: &str = "Qz9EQLnnc6KJvSE2WucQ+MsuCJHnSafCHmRsOjxlkSU=";

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("test hex");
        }
        out
    }

    #[test]
    fn rfc7748_alice_text_form_round_trips() {
        let private = parse_key(ALICE_PRIVATE_B64).expect("valid key");
        assert_eq!(private.as_bytes(), &hex32(ALICE_PRIVATE_HEX));
        assert_eq!(encode_key(private.as_bytes()), ALICE_PRIVATE_B64);
        let public = public_from_private(private.as_bytes());
        assert_eq!(public, hex32(ALICE_PUBLIC_HEX));
        assert_eq!(encode_key(&public), ALICE_PUBLIC_B64);
    }

    #[test]
    fn matches_wg_pubkey() {
        let private = parse_key(WG_PRIVATE).expect("valid key");
        assert_eq!(
            encode_key(&public_from_private(private.as_bytes())),
            WG_PUBLIC
        );
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let key = parse_key(&format!(" \t{WG_PRIVATE}\n")).expect("valid key");
        assert_eq!(encode_key(key.as_bytes()), WG_PRIVATE);
    }

    #[test]
    fn non_canonical_trailing_bits_are_accepted_like_wg() {
        // 'p' and 'o' differ only in the low bits that 32 bytes leave unused.
        let odd = WG_PRIVATE.replace("Olo=", "Olp=");
        let key = parse_key(&odd).expect("wg accepts this");
        assert_eq!(encode_key(key.as_bytes()), WG_PRIVATE);
    }

    #[test]
    fn bad_input_is_rejected_with_the_reason() {
        assert_eq!(parse_key("").err(), Some(KeyError::Empty));
        assert_eq!(parse_key("   ").err(), Some(KeyError::Empty));
        assert_eq!(
            parse_key(&WG_PRIVATE[..43]).err(),
            Some(KeyError::WrongLength { chars: 43 })
        );
        assert_eq!(
            parse_key(&format!("{WG_PRIVATE}A")).err(),
            Some(KeyError::WrongLength { chars: 45 })
        );
        let mut bad = WG_PRIVATE.to_string();
        bad.replace_range(5..6, "-");
        assert_eq!(
            parse_key(&bad).err(),
            Some(KeyError::NotBase64 { position: 6 })
        );
        // Non-ASCII counts as one character and is reported by position.
        let mut accented = WG_PRIVATE.to_string();
        accented.replace_range(0..1, "é");
        assert_eq!(
            parse_key(&accented).err(),
            Some(KeyError::NotBase64 { position: 1 })
        );
        // Base64 without padding: 44 characters but no '='.
        let unpadded = WG_PRIVATE.replace('=', "A");
        assert_eq!(parse_key(&unpadded).err(), Some(KeyError::BadPadding));
        // Two '=' (31 bytes of data padded out to 44 characters).
        let short = format!("{}==", &WG_PRIVATE[..42]);
        assert_eq!(parse_key(&short).err(), Some(KeyError::BadPadding));
        // A hex key (64 characters) is a common mistake.
        assert_eq!(
            parse_key(ALICE_PRIVATE_HEX).err(),
            Some(KeyError::WrongLength { chars: 64 })
        );
    }

    #[test]
    fn errors_never_echo_the_input() {
        let secret = WG_PRIVATE.replace('+', "*");
        let err = parse_key(&secret).expect_err("rejected");
        assert!(!err.to_string().contains(&secret[..10]));
    }

    #[test]
    fn debug_is_redacted() {
        let key = parse_key(WG_PRIVATE).expect("valid key");
        assert_eq!(format!("{key:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(key)), "Some(<redacted>)");
    }

    #[test]
    fn generated_private_keys_are_clamped_and_distinct() {
        let a = generate_private().expect("getrandom");
        let b = generate_private().expect("getrandom");
        for k in [&a, &b] {
            let bytes = k.as_bytes();
            assert_eq!(bytes[0] & 7, 0);
            assert_eq!(bytes[31] & 0x80, 0);
            assert_eq!(bytes[31] & 0x40, 0x40);
            // Round trip through the text form.
            let text = encode_key(bytes);
            assert_eq!(text.len(), KEY_TEXT_LEN);
            assert_eq!(parse_key(&text).expect("valid").as_bytes(), bytes);
        }
        assert_ne!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn generated_psks_are_random() {
        let a = generate_psk().expect("getrandom");
        let b = generate_psk().expect("getrandom");
        assert_ne!(a.as_bytes(), b.as_bytes());
    }
}
