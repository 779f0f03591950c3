//! The hand-off protocol between two ends of a socket pair, through a relay that records (and
//! may alter) every byte that crosses: what an observer of the socket sees.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use veil_control::handoff::{decode, encode, HandoffState, PeerState};
use veil_dataplane::crypto::KeypairState;
use veil_dataplane::replay::WORDS;

use super::*;

/// A keypair whose keys are `byte` repeated.
fn keypair(byte: u8) -> KeypairState {
    KeypairState {
        keys: Zeroizing::new([byte; 64]),
        local_index: 1,
        remote_index: 2,
        age: Duration::from_secs(1),
        initiator: false,
        sent: 10,
        replay_next: 5,
        replay_bitmap: [0; WORDS],
        confirmed: true,
    }
}

fn state() -> HandoffState {
    HandoffState {
        interface_public: [3; 32],
        captured_at: std::time::SystemTime::now(),
        cookie_secret: Some((Zeroizing::new([0xC5; 32]), Duration::from_secs(1))),
        next_session: 2,
        peers: vec![PeerState {
            public_key: [4; 32],
            keypairs: [
                Some(keypair(0xA1)),
                Some(keypair(0xB2)),
                Some(keypair(0xD3)),
            ],
            ..PeerState::default()
        }],
    }
}

/// Every secret of [`state`] and the token.
fn secrets(token: &[u8; TOKEN_LEN]) -> Vec<Vec<u8>> {
    let mut s: Vec<Vec<u8>> = [0xA1u8, 0xB2, 0xD3, 0xC5]
        .iter()
        .map(|b| vec![*b; 8])
        .collect();
    s.push(token[..8].to_vec());
    s.push(hex(&token[..4]).into_bytes());
    s
}

/// Copy one direction from `from` to `to`, descriptors included, recording the bytes;
/// `alter` may change a chunk, given the offset of its first byte.
fn relay(
    from: UnixStream,
    to: UnixStream,
    seen: Arc<Mutex<Vec<u8>>>,
    mut alter: impl FnMut(usize, &mut [u8]) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut at = 0;
        loop {
            let Ok((n, fds)) = fdpass::recv_with_fds(&from, &mut buf) else {
                return;
            };
            if n == 0 {
                let _ = to.shutdown(std::net::Shutdown::Both);
                return;
            }
            alter(at, &mut buf[..n]);
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(&buf[..n]);
            at += n;
            let raw: Vec<RawFd> = fds.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
            if fdpass::send_with_fds(&to, &buf[..n], &raw).is_err() {
                return;
            }
        }
    })
}

struct Outcome {
    old: Result<(), HandoffError>,
    /// The state the new side received, once it confirmed and the old side released.
    new: Result<Zeroizing<Vec<u8>>, HandoffError>,
    /// Everything that crossed, both ways.
    seen: Vec<u8>,
    /// What crossed from the old process to the new.
    to_new: Vec<u8>,
}

/// One hand-off of [`state`] between an old side holding `token` and a new side that knows
/// `told`, through the relay (`alter` acts on the old-to-new direction).
fn run(
    token: &mut TokenFile,
    told: [u8; TOKEN_LEN],
    alter: impl FnMut(usize, &mut [u8]) + Send + 'static,
) -> Outcome {
    use std::os::fd::AsRawFd;
    let (mut old_end, relay_old) = UnixStream::pair().expect("pair");
    let (relay_new, new_end) = UnixStream::pair().expect("pair");
    let up = Arc::new(Mutex::new(Vec::new()));
    let down = Arc::new(Mutex::new(Vec::new()));
    let r1 = relay(
        relay_new.try_clone().expect("clone"),
        relay_old.try_clone().expect("clone"),
        up.clone(),
        |_, _| {},
    );
    let r2 = relay(relay_old, relay_new, down.clone(), alter);
    let new = std::thread::spawn(move || {
        let got = take_on(new_end, &told, Deadlines::default())?;
        assert_eq!((got.fds.tuns.len(), got.fds.udps.len()), (1, 1));
        let state = Zeroizing::new(got.state.to_vec());
        got.confirm().map(|_| state)
    });
    let null = File::open("/dev/null").expect("/dev/null");
    let mut serve = Serve {
        token,
        fds: Descriptors {
            tuns: vec![null.as_raw_fd()],
            udps: vec![null.as_raw_fd()],
            ..Descriptors::default()
        },
        offloads: TunOffloads::default(),
        deadlines: Deadlines::default(),
    };
    let mut reached = Reached::Nothing;
    let old = serve.run(&mut old_end, || Ok(encode(&state())), |_| {}, &mut reached);
    drop(old_end);
    let new = new.join().expect("the new side panicked");
    let _ = (r1.join(), r2.join());
    let to_new = down.lock().map(|v| v.clone()).unwrap_or_default();
    let mut seen = up.lock().map(|v| v.clone()).unwrap_or_default();
    seen.extend_from_slice(&to_new);
    Outcome {
        old,
        new,
        seen,
        to_new,
    }
}

fn token_file(tag: &str) -> TokenFile {
    let path =
        std::env::temp_dir().join(format!("veil-handoff-{tag}-{}.token", std::process::id()));
    TokenFile::create(&path).expect("token file")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A token file, the token it holds, and an unaltered hand-off with it.
fn clean_run(tag: &str) -> (TokenFile, [u8; TOKEN_LEN], Outcome) {
    let mut token = token_file(tag);
    let told = *token.token();
    let out = run(&mut token, told, |_, _| {});
    (token, told, out)
}

#[test]
fn a_hand_off_carries_the_state_and_no_secret_in_clear() {
    let (token, told, out) = clean_run("clear");
    out.old.expect("old side");
    let got = out.new.expect("new side");
    let back = decode(&got).expect("the state decodes");
    assert_eq!(back.peers.len(), 1);
    let k = back.peers[0].keypairs[2].as_ref().expect("next keypair");
    assert_eq!(&k.keys[..], &[0xD3; 64][..]);
    assert!(
        out.seen.len() > 3 * 64,
        "only {} bytes crossed",
        out.seen.len()
    );
    for secret in secrets(&told) {
        assert!(
            !contains(&out.seen, &secret),
            "{secret:02x?} crossed the socket in clear"
        );
    }
    // The token opened one attempt: it is another one now.
    assert_ne!(token.token(), &told);
    token.remove();
}

#[test]
fn a_wrong_token_is_refused_and_nothing_is_captured() {
    let mut token = token_file("wrong");
    let mut told = *token.token();
    told[0] ^= 1;
    let out = run(&mut token, told, |_, _| {});
    assert!(
        matches!(out.old, Err(HandoffError::BadHello)),
        "{:?}",
        out.old.err()
    );
    assert!(out.new.is_err());
    assert!(!contains(&out.to_new, OFFER_MAGIC), "an offer was made");
    token.remove();
}

#[test]
fn a_tampered_state_is_refused_and_the_old_side_serves_on() {
    for at in [OFFER_LEN + 4 + 3, OFFER_LEN + 4 + 200, 10] {
        let mut token = token_file("tamper");
        let told = *token.token();
        let out = run(&mut token, told, move |offset, chunk| {
            if let Some(b) = at.checked_sub(offset).and_then(|i| chunk.get_mut(i)) {
                *b ^= 0x40;
            }
        });
        assert!(
            matches!(out.new, Err(HandoffError::Sealed)),
            "byte {at} altered: {:?}",
            out.new.err()
        );
        assert!(
            out.old.is_err(),
            "the old side took an unconfirmed hand-off as done"
        );
        token.remove();
    }
}

#[test]
fn a_state_replayed_from_an_earlier_transfer_is_refused() {
    let (mut token, _, first) = clean_run("replay");
    first.new.expect("first transfer");
    let recorded = Arc::new(first.to_new[OFFER_LEN..].to_vec());
    let told = *token.token();
    let second = run(&mut token, told, move |offset, chunk| {
        for (i, b) in chunk.iter_mut().enumerate() {
            if let Some(r) = (offset + i)
                .checked_sub(OFFER_LEN)
                .and_then(|j| recorded.get(j))
            {
                *b = *r;
            }
        }
    });
    assert!(
        matches!(second.new, Err(HandoffError::Sealed)),
        "{:?}",
        second.new.err()
    );
    assert!(second.old.is_err());
    token.remove();
}
