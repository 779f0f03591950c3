//! The published (cacophony) vector for `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`, run through
//! the Noise core with the vector's prologue, psk, static and ephemeral keys injected.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use serde_json::Value;
use veil_control::noise::{
    dh, initiation_len, response_len, Ikpsk2, INITIATION_STATIC_END, PROTOCOL_NAME,
};
use veil_dataplane::{ChaChaPoly, TransportAead};
use x25519_dalek::{PublicKey, StaticSecret};

const VECTORS: &str = include_str!("vectors/noise_ikpsk2_25519_chachapoly_blake2s.json");

fn field(v: &Value, name: &str) -> Vec<u8> {
    hex::decode(
        v[name]
            .as_str()
            .unwrap_or_else(|| panic!("vector lacks {name}")),
    )
    .unwrap_or_else(|e| panic!("{name} is not hex: {e}"))
}

fn key32(v: &Value, name: &str) -> [u8; 32] {
    field(v, name)
        .try_into()
        .unwrap_or_else(|_| panic!("{name} is not 32 bytes"))
}

fn secret(v: &Value, name: &str) -> StaticSecret {
    StaticSecret::from(key32(v, name))
}

fn public(s: &StaticSecret) -> [u8; 32] {
    PublicKey::from(s).to_bytes()
}

#[test]
fn cacophony_ikpsk2_vector() {
    let all: Value = serde_json::from_str(VECTORS).expect("vector file parses");
    let vectors = all["vectors"].as_array().expect("vectors array");
    assert!(!vectors.is_empty());
    for v in vectors {
        assert_eq!(
            v["protocol_name"].as_str().unwrap().as_bytes(),
            PROTOCOL_NAME
        );
        run_vector(v);
    }
}

fn run_vector(v: &Value) {
    let init_prologue = field(v, "init_prologue");
    let resp_prologue = field(v, "resp_prologue");
    let init_psk: [u8; 32] = hex::decode(v["init_psks"][0].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let resp_psk: [u8; 32] = hex::decode(v["resp_psks"][0].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let init_s = secret(v, "init_static");
    let init_e = secret(v, "init_ephemeral");
    let resp_s = secret(v, "resp_static");
    let resp_e = secret(v, "resp_ephemeral");
    let init_rs = key32(v, "init_remote_static");
    assert_eq!(
        init_rs,
        public(&resp_s),
        "vector's remote static is the responder's"
    );
    let messages = v["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 6);
    let payload = |i: usize| field(&messages[i], "payload");
    let expected = |i: usize| field(&messages[i], "ciphertext");

    let mut initiator = Ikpsk2::new(PROTOCOL_NAME, &init_prologue, &init_rs);
    let mut responder = Ikpsk2::new(PROTOCOL_NAME, &resp_prologue, &public(&resp_s));

    // Message 0: initiator -> responder, `e, es, s, ss`.
    let p0 = payload(0);
    let mut m0 = vec![0u8; initiation_len(p0.len())];
    let ss_i = dh(&init_s, &init_rs).unwrap();
    initiator
        .write_initiation(&init_e, &public(&init_s), &init_rs, &ss_i, &p0, &mut m0)
        .unwrap();
    assert_eq!(hex::encode(&m0), hex::encode(expected(0)), "message 0");

    let keys = responder.read_initiation_static(&resp_s, &m0).unwrap();
    assert_eq!(keys.static_public, public(&init_s));
    assert_eq!(keys.ephemeral, public(&init_e));
    let ss_r = dh(&resp_s, &keys.static_public).unwrap();
    let mut got0 = vec![0u8; p0.len()];
    responder
        .read_initiation_payload(&ss_r, &m0[INITIATION_STATIC_END..], &mut got0)
        .unwrap();
    assert_eq!(got0, p0);

    // Message 1: responder -> initiator, `e, ee, se, psk`.
    let p1 = payload(1);
    let mut m1 = vec![0u8; response_len(p1.len())];
    responder
        .write_response(&resp_e, &keys, &resp_psk, &p1, &mut m1)
        .unwrap();
    assert_eq!(hex::encode(&m1), hex::encode(expected(1)), "message 1");
    let mut got1 = vec![0u8; p1.len()];
    initiator
        .read_response(&init_e, &init_s, &init_psk, &m1, &mut got1)
        .unwrap();
    assert_eq!(got1, p1);

    let hh = key32(v, "handshake_hash");
    assert_eq!(initiator.handshake_hash(), &hh);
    assert_eq!(responder.handshake_hash(), &hh);

    // Transport: messages alternate, initiator first; each direction counts from 0.
    let ki = initiator.split();
    let kr = responder.split();
    assert_eq!(*ki.initiator_to_responder, *kr.initiator_to_responder);
    assert_eq!(*ki.responder_to_initiator, *kr.responder_to_initiator);
    let i_send = ChaChaPoly::new(&ki.initiator_to_responder);
    let i_recv = ChaChaPoly::new(&ki.responder_to_initiator);
    let r_send = ChaChaPoly::new(&kr.responder_to_initiator);
    let r_recv = ChaChaPoly::new(&kr.initiator_to_responder);
    let mut counters = [0u64; 2];
    for i in 2..messages.len() {
        let from_initiator = i % 2 == 0;
        let (send, recv) = if from_initiator {
            (&i_send, &r_recv)
        } else {
            (&r_send, &i_recv)
        };
        let dir = usize::from(!from_initiator);
        let counter = counters[dir];
        counters[dir] += 1;
        let p = payload(i);
        let mut data = p.clone();
        let tag = send.seal(counter, &mut data);
        let mut wire = data.clone();
        wire.extend_from_slice(&tag);
        assert_eq!(hex::encode(&wire), hex::encode(expected(i)), "message {i}");
        recv.open(counter, &mut data, &tag).unwrap();
        assert_eq!(data, p, "message {i} decrypts");
    }
}
