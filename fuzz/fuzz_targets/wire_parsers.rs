//! Every dataplane wire view, the control-frame parser and `message_type` on arbitrary bytes:
//! they may refuse, never panic, and everything that parses must be fully readable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_dataplane::wire::{
    is_control_frame, mac1_input, mac2_input, message_type, ControlFrame, CookieReply, Initiation,
    Response, Transport,
};

fuzz_target!(|data: &[u8]| {
    let _ = message_type(data);
    let _ = mac1_input(data);
    let _ = mac2_input(data);
    let _ = is_control_frame(data);
    if let Ok(m) = Initiation::new_checked(data) {
        let _ = (
            m.sender_index(),
            m.ephemeral(),
            m.encrypted_static(),
            m.encrypted_timestamp(),
            m.mac1(),
            m.mac2(),
        );
    }
    if let Ok(m) = Response::new_checked(data) {
        let _ = (
            m.sender_index(),
            m.receiver_index(),
            m.ephemeral(),
            m.encrypted_nothing(),
            m.mac1(),
            m.mac2(),
        );
    }
    if let Ok(m) = CookieReply::new_checked(data) {
        let _ = (m.receiver_index(), m.nonce(), m.encrypted_cookie());
    }
    if let Ok(m) = Transport::new_checked(data) {
        let _ = (m.receiver_index(), m.counter(), m.ciphertext().len());
    }
    if let Ok(frame) = ControlFrame::parse(data) {
        // A parsed frame re-encodes to a prefix of its input.
        let mut out = [0u8; 64];
        let n = frame.encode(&mut out).expect("parsed frames fit 64 bytes");
        assert_eq!(&out[..n], &data[..n]);
    }
});
