//! Session migration (a client's address changes), sans-IO: the policy and the
//! single-use migration tokens.
//!
//! A token is 40 opaque bytes: session id (8) ‖ expiry in seconds of the
//! gateway's clock (8) ‖ nonce (8) ‖ MAC (16), the MAC being keyed BLAKE2s over
//! the first 24 bytes and the peer's public key under a secret of this process.
//! The gateway remembers the nonces it granted and not yet used, so a token
//! works once, for the session it was granted to, until it expires.

use std::time::{Duration, Instant};

use veil_dataplane::link::Epoch;
use veil_dataplane::wire::MIGRATION_TOKEN_LEN;
use zeroize::Zeroizing;

use crate::session::Session;

/// The `[migration]` config section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationPolicy {
    /// Accept address changes at all (true).
    pub enabled: bool,
    /// How long a granted token stays valid (300 s).
    pub token_ttl: Duration,
    /// Most migrations one session may make (5).
    pub max_per_session: u32,
    /// Least time between two migrations without a token (10 s).
    pub cooldown: Duration,
    /// Validate the migrations of standard WireGuard peers too (false: they roam at once on
    /// any authenticated packet, as with WireGuard; veil peers are always validated).
    pub validate_all_peers: bool,
}

impl Default for MigrationPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            token_ttl: Duration::from_secs(300),
            max_per_session: 5,
            cooldown: Duration::from_secs(10),
            validate_all_peers: false,
        }
    }
}

/// Why a migration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `enable_session_migration = false`.
    Disabled,
    /// The session made `max_migrations_per_session` migrations already.
    TooMany,
    /// Inside `migration_cooldown_sec` of the last one, without a token.
    Cooldown,
    /// The peer has no live session.
    NoSession,
    /// The token is malformed, foreign, expired or used.
    BadToken(TokenError),
}

impl Refusal {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Disabled => "disabled",
            Refusal::TooMany => "too_many",
            Refusal::Cooldown => "cooldown",
            Refusal::NoSession => "no_session",
            Refusal::BadToken(_) => "bad_token",
        }
    }
}

/// Decide a migration of `session` at `now`; `with_token` if a valid token came with it.
pub fn decide(
    policy: &MigrationPolicy,
    session: &Session,
    now: Instant,
    with_token: bool,
) -> Result<(), Refusal> {
    if !policy.enabled {
        return Err(Refusal::Disabled);
    }
    if !session.is_live() {
        return Err(Refusal::NoSession);
    }
    if session.migrations >= policy.max_per_session {
        return Err(Refusal::TooMany);
    }
    let cooling = session
        .last_migration
        .is_some_and(|t| now.saturating_duration_since(t) < policy.cooldown);
    if cooling && !with_token {
        return Err(Refusal::Cooldown);
    }
    Ok(())
}

/// Why a token does not open a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// The MAC does not verify (forged or from another process or peer).
    Forged,
    /// Granted to another session.
    Foreign,
    /// Past its TTL.
    Expired,
    /// Used already, or never granted to this session.
    Reused,
}

/// Mints and checks tokens with a per-process secret.
pub struct TokenMinter {
    secret: Zeroizing<[u8; 32]>,
    epoch: Epoch,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenMinter(<secret>)")
    }
}

/// Nonces granted and not yet used, per session (small: a client holds one or two).
pub const MAX_OUTSTANDING: usize = 4;

impl TokenMinter {
    /// A minter with `secret` (random, from the caller).
    pub fn new(secret: [u8; 32], epoch: Epoch) -> Self {
        Self {
            secret: Zeroizing::new(secret),
            epoch,
        }
    }

    fn mac(&self, body: &[u8], peer_public: &[u8; 32]) -> [u8; 16] {
        crate::noise::mac16(&self.secret[..], &[body, peer_public])
    }

    fn secs(&self, t: Instant) -> u64 {
        self.epoch.nanos(t) / 1_000_000_000
    }

    /// A token for `session` of the peer `peer_public`, valid for `ttl` from `now`.
    /// `nonce` must be fresh randomness; the caller stores it in `outstanding`.
    pub fn mint(
        &self,
        session_id: u64,
        peer_public: &[u8; 32],
        now: Instant,
        ttl: Duration,
        nonce: [u8; 8],
    ) -> [u8; MIGRATION_TOKEN_LEN] {
        let mut t = [0u8; MIGRATION_TOKEN_LEN];
        t[..8].copy_from_slice(&session_id.to_be_bytes());
        t[8..16].copy_from_slice(&(self.secs(now) + ttl.as_secs()).to_be_bytes());
        t[16..24].copy_from_slice(&nonce);
        let mac = self.mac(&t[..24], peer_public);
        t[24..].copy_from_slice(&mac);
        t
    }

    /// Check a token presented by `peer_public` for `session_id` and consume its
    /// nonce from `outstanding` (single use).
    pub fn redeem(
        &self,
        token: &[u8; MIGRATION_TOKEN_LEN],
        session_id: u64,
        peer_public: &[u8; 32],
        now: Instant,
        outstanding: &mut Vec<[u8; 8]>,
    ) -> Result<(), TokenError> {
        let (body, mac) = token.split_at(24);
        let expected = self.mac(body, peer_public);
        if !constant_time_eq(&expected, mac) {
            return Err(TokenError::Forged);
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[..8]);
        if u64::from_be_bytes(id) != session_id {
            return Err(TokenError::Foreign);
        }
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&body[8..16]);
        if self.secs(now) >= u64::from_be_bytes(exp) {
            return Err(TokenError::Expired);
        }
        let mut nonce = [0u8; 8];
        nonce.copy_from_slice(&body[16..24]);
        match outstanding.iter().position(|n| *n == nonce) {
            Some(i) => {
                outstanding.swap_remove(i);
                Ok(())
            }
            None => Err(TokenError::Reused),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: [u8; 32] = [1; 32];

    /// A minter, the time it started, a token it minted and the nonces outstanding.
    type Minted = (
        TokenMinter,
        Instant,
        [u8; MIGRATION_TOKEN_LEN],
        Vec<[u8; 8]>,
    );

    /// A token for session 7 and [`PEER`], minted now for 300 s with `nonce`, whose nonce is the
    /// one outstanding.
    fn minted(nonce: u8) -> Minted {
        let now = Instant::now();
        let m = TokenMinter::new([5; 32], Epoch::new(now));
        let tok = m.mint(7, &PEER, now, Duration::from_secs(300), [nonce; 8]);
        (m, now, tok, vec![[nonce; 8]])
    }

    #[test]
    fn token_is_single_use_and_bound() {
        let (m, now, tok, mut out) = minted(9);
        assert_eq!(
            m.redeem(&tok, 8, &PEER, now, &mut out),
            Err(TokenError::Foreign)
        );
        assert_eq!(
            m.redeem(&tok, 7, &[2; 32], now, &mut out),
            Err(TokenError::Forged)
        );
        assert_eq!(m.redeem(&tok, 7, &PEER, now, &mut out), Ok(()));
        assert_eq!(
            m.redeem(&tok, 7, &PEER, now, &mut out),
            Err(TokenError::Reused)
        );
    }

    #[test]
    fn token_expires_and_tampering_is_caught() {
        let (m, now, tok, mut out) = minted(3);
        let late = now + Duration::from_secs(301);
        assert_eq!(
            m.redeem(&tok, 7, &PEER, late, &mut out),
            Err(TokenError::Expired)
        );
        for i in 0..MIGRATION_TOKEN_LEN {
            let mut bad = tok;
            bad[i] ^= 0x40;
            assert!(m.redeem(&bad, 7, &PEER, now, &mut out).is_err(), "byte {i}");
        }
        assert_eq!(out.len(), 1, "failed attempts consume nothing");
        let other = TokenMinter::new([6; 32], Epoch::new(now));
        assert_eq!(
            other.redeem(&tok, 7, &PEER, now, &mut out),
            Err(TokenError::Forged)
        );
    }

    #[test]
    fn policy_cooldown_token_and_limit() {
        let p = MigrationPolicy::default();
        let t0 = Instant::now();
        let mut s = Session::new(1, t0);
        assert_eq!(decide(&p, &s, t0, false), Ok(()));
        s.migrations = 1;
        s.last_migration = Some(t0);
        let soon = t0 + Duration::from_secs(3);
        assert_eq!(decide(&p, &s, soon, false), Err(Refusal::Cooldown));
        assert_eq!(decide(&p, &s, soon, true), Ok(()));
        assert_eq!(decide(&p, &s, t0 + p.cooldown, false), Ok(()));
        s.migrations = p.max_per_session;
        assert_eq!(
            decide(&p, &s, t0 + Duration::from_secs(100), true),
            Err(Refusal::TooMany)
        );
        let off = MigrationPolicy {
            enabled: false,
            ..p
        };
        assert_eq!(
            decide(&off, &Session::new(2, t0), t0, true),
            Err(Refusal::Disabled)
        );
    }
}
