//! Every dataplane wire view and the control-frame parser on arbitrary bytes: they may refuse,
//! never panic, and everything that parses is fully readable. Shared by the proptests
//! (`parsers_prop.rs`) and the fuzz target (`fuzz/fuzz_targets/wire_parsers.rs`), which both
//! include this file by path.

use veil_dataplane::wire::{
    is_control_frame, mac1_input, mac2_input, message_type, ControlFrame, CookieReply, Initiation,
    Response, Transport, COOKIE_REPLY_LEN, FRAME_HEADER_LEN, INITIATION_LEN, RESPONSE_LEN,
    TRANSPORT_MIN_LEN,
};

/// If `b` parses as the fixed-size message `$view`, it is `$len` bytes long and each accessor
/// named (every one the view has) and its `Debug` read it.
macro_rules! fixed_view {
    ($b:expr, $view:ident, $len:expr, [$($accessor:ident),+ $(,)?]) => {
        if let Ok(m) = $view::new_checked($b) {
            assert_eq!(m.as_bytes().len(), $len);
            let _ = ($(m.$accessor(),)+);
            let _ = format!("{m:?}");
        }
    };
}

/// Exercise every parser and every accessor of whatever parses.
pub fn parse_everything(b: &[u8]) {
    let _ = message_type(b);
    let _ = mac1_input(b);
    let _ = mac2_input(b);
    let _ = is_control_frame(b);
    fixed_view!(
        b,
        Initiation,
        INITIATION_LEN,
        [
            sender_index,
            ephemeral,
            encrypted_static,
            encrypted_timestamp,
            mac1,
            mac2
        ]
    );
    fixed_view!(
        b,
        Response,
        RESPONSE_LEN,
        [
            sender_index,
            receiver_index,
            ephemeral,
            encrypted_nothing,
            mac1,
            mac2
        ]
    );
    fixed_view!(
        b,
        CookieReply,
        COOKIE_REPLY_LEN,
        [receiver_index, nonce, encrypted_cookie]
    );
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
