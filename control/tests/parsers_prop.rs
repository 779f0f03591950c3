//! Every dataplane wire view and the control-frame parser, fed arbitrary bytes of arbitrary
//! length, returns an error or a view whose accessors all work: never a panic.
//! (Kept here because the control crate is their main consumer of untrusted handshake bytes.)

// The fuzz target `wire_parsers` runs the same function.
#[path = "common/wire_views.rs"]
mod wire_views;

use proptest::prelude::*;
use veil_dataplane::wire::{COOKIE_REPLY_LEN, INITIATION_LEN, RESPONSE_LEN};
use wire_views::parse_everything;

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
