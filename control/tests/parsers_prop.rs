//! Every dataplane wire view and the control-frame parser, fed arbitrary bytes of arbitrary
//! length, returns an error or a view whose accessors all work: never a panic.
//! (Kept here because the control crate is their main consumer of untrusted handshake bytes.)

use proptest::prelude::*;
use veil_dataplane::wire::{
    is_control_frame, mac1_input, mac2_input, message_type, ControlFrame, CookieReply, Initiation,
    Response, Transport, COOKIE_REPLY_LEN, FRAME_HEADER_LEN, INITIATION_LEN, RESPONSE_LEN,
    TRANSPORT_MIN_LEN,
};

/// Exercise every parser and every accessor of whatever parses.
fn parse_everything(b: &[u8]) {
    let _ = message_type(b);
    let _ = mac1_input(b);
    let _ = mac2_input(b);
    let _ = is_control_frame(b);
    if let Ok(m) = Initiation::new_checked(b) {
        assert_eq!(m.as_bytes().len(), INITIATION_LEN);
        let _ = (
            m.sender_index(),
            m.ephemeral(),
            m.encrypted_static(),
            m.encrypted_timestamp(),
            m.mac1(),
            m.mac2(),
        );
        let _ = format!("{m:?}");
    }
    if let Ok(m) = Response::new_checked(b) {
        assert_eq!(m.as_bytes().len(), RESPONSE_LEN);
        let _ = (
            m.sender_index(),
            m.receiver_index(),
            m.ephemeral(),
            m.encrypted_nothing(),
            m.mac1(),
            m.mac2(),
        );
        let _ = format!("{m:?}");
    }
    if let Ok(m) = CookieReply::new_checked(b) {
        assert_eq!(m.as_bytes().len(), COOKIE_REPLY_LEN);
        let _ = (m.receiver_index(), m.nonce(), m.encrypted_cookie());
    }
    if let Ok(m) = Transport::new_checked(b) {
        assert!(m.as_bytes().len() >= TRANSPORT_MIN_LEN);
        let _ = (m.receiver_index(), m.counter(), m.ciphertext().len());
        let _ = format!("{m:?}");
    }
    if let Ok(f) = ControlFrame::parse(b) {
        // Whatever parses re-encodes to a prefix of the input.
        let mut out = [0u8; 64];
        let n = f.encode(&mut out).expect("a parsed frame fits 64 bytes");
        assert!(n >= FRAME_HEADER_LEN);
        assert_eq!(&out[..n], &b[..n]);
        let _ = format!("{f:?}");
    }
}

/// Bytes that start with a plausible type word, so the checks past the type get exercised.
fn typed_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        1u8..=4,
        prop_oneof![
            Just(INITIATION_LEN),
            Just(RESPONSE_LEN),
            Just(COOKIE_REPLY_LEN),
            0usize..200
        ],
    )
        .prop_flat_map(|(t, len)| {
            proptest::collection::vec(any::<u8>(), len).prop_map(move |mut v| {
                for (i, b) in [t, 0, 0, 0].iter().enumerate() {
                    if let Some(slot) = v.get_mut(i) {
                        *slot = *b;
                    }
                }
                v
            })
        })
}

/// Bytes that look like a control frame header with a random kind and body length.
fn frame_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        0xF0u8..=0xFF,
        prop_oneof![Just(1u8), any::<u8>()],
        0u16..60,
        proptest::collection::vec(any::<u8>(), 0..70),
    )
        .prop_map(|(kind, version, len, body)| {
            let mut v = vec![kind, version];
            v.extend_from_slice(&len.to_be_bytes());
            v.extend_from_slice(&body);
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        parse_everything(&b);
    }

    #[test]
    fn typed_arbitrary_bytes(b in typed_bytes()) {
        parse_everything(&b);
    }

    #[test]
    fn frame_like_bytes(b in frame_bytes()) {
        parse_everything(&b);
    }
}
