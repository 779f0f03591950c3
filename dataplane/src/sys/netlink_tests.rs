//! Tests of the netlink encoder and parser (`netlink.rs`).

use super::*;

/// A netlink message header written by hand (not by [`Message`]): `len`, `kind`, no flags,
/// `seq`, port 0.
fn hand_header(len: u32, kind: u16, seq: u32) -> Vec<u8> {
    let flags = 0u16;
    let port = 0u32;
    [
        &len.to_ne_bytes()[..],
        &kind.to_ne_bytes(),
        &flags.to_ne_bytes(),
        &seq.to_ne_bytes(),
        &port.to_ne_bytes(),
    ]
    .concat()
}

/// A request of `kind` with the route to `dst`/`prefix` through interface 3.
fn route_request(kind: u16, dst: &str, prefix: u8, op: RouteOp) -> Message {
    let mut msg = Message::new(kind, NLM_F_REQUEST | NLM_F_ACK);
    put_route(&mut msg, 3, dst.parse().expect("address"), prefix, op).expect("fits");
    msg
}

/// An attribute written by hand: its header (`len`, `kind`, as claimed) and `payload`.
fn hand_attr(len: u16, kind: u16, payload: &[u8]) -> Vec<u8> {
    [&len.to_ne_bytes()[..], &kind.to_ne_bytes(), payload].concat()
}

#[test]
fn masks_host_bits() {
    let a: IpAddr = "10.78.3.4".parse().expect("v4");
    assert_eq!(mask(a, 16), "10.78.0.0".parse::<IpAddr>().expect("v4"));
    assert_eq!(mask(a, 0), "0.0.0.0".parse::<IpAddr>().expect("v4"));
    assert_eq!(mask(a, 32), a);
    let b: IpAddr = "fd77::1234".parse().expect("v6");
    assert_eq!(mask(b, 64), "fd77::".parse::<IpAddr>().expect("v6"));
    assert_eq!(mask(b, 128), b);
}

#[test]
fn rejects_overlong_prefix() {
    assert!(check_prefix("1.2.3.4".parse().expect("v4"), 33).is_err());
    assert!(check_prefix("::".parse().expect("v6"), 129).is_err());
    assert!(check_prefix("::".parse().expect("v6"), 128).is_ok());
}

/// A rule as put_rule encodes it: the 8 header bytes, the flags, the attributes.
type EncodedRule = ([u8; 8], Option<u32>, Vec<(u16, Vec<u8>)>);

fn encoded_rule(v6: bool, kind: RuleKind) -> EncodedRule {
    let mut msg = Message::new(libc::RTM_NEWRULE, NLM_F_REQUEST | NLM_F_ACK);
    put_rule(&mut msg, &Rule { v6, kind }).expect("fits");
    let b = msg.as_slice();
    let hdr = &b[NLMSG_HDR_LEN..NLMSG_HDR_LEN + RTMSG_BODY_LEN];
    let attrs = attrs(&b[NLMSG_HDR_LEN + RTMSG_BODY_LEN..])
        .map(|(k, v)| (k, v.to_vec()))
        .collect();
    (hdr[..8].try_into().expect("8 bytes"), u32_at(hdr, 8), attrs)
}

#[test]
fn encodes_rules_like_iproute2() {
    let table = 51820u32.to_ne_bytes().to_vec();
    let kind = RuleKind::NotMarkTable {
        mark: 51820,
        table: 51820,
    };
    // 51820 does not fit the byte: RT_TABLE_UNSPEC there, the id in FRA_TABLE; action 1
    // is "to table".
    assert_eq!(
        encoded_rule(false, kind),
        (
            [libc::AF_INET as u8, 0, 0, 0, 0, 0, 0, 1],
            Some(FIB_RULE_INVERT),
            vec![(FRA_TABLE, table.clone()), (FRA_FWMARK, table)]
        )
    );
    assert_eq!(
        encoded_rule(true, RuleKind::MainSuppressDefault),
        (
            [libc::AF_INET6 as u8, 0, 0, 0, 254, 0, 0, 1],
            Some(0),
            vec![
                (FRA_TABLE, 254u32.to_ne_bytes().to_vec()),
                (FRA_SUPPRESS_PREFIXLEN, 0u32.to_ne_bytes().to_vec())
            ]
        )
    );
}

#[test]
fn a_route_in_another_table_names_it() {
    let mut msg = Message::new(libc::RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK);
    let dest = "0.0.0.0".parse().expect("v4");
    put_route_in(&mut msg, 51820, 3, dest, 0, RouteOp::Add).expect("fits");
    let b = msg.as_slice();
    assert_eq!(route_table(&b[NLMSG_HDR_LEN..]), Some(51820));
    let mut msg = Message::new(libc::RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK);
    put_route_in(&mut msg, 200, 3, dest, 0, RouteOp::Add).expect("fits");
    assert_eq!(route_table(&msg.as_slice()[NLMSG_HDR_LEN..]), Some(200));
}

#[test]
fn encodes_setlink_mtu_like_iproute2() {
    let mut msg = Message::new(libc::RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK);
    msg.put_ifinfomsg(7, 0, 0).expect("fits");
    msg.put_attr(IFLA_MTU, &1420u32.to_ne_bytes())
        .expect("fits");
    msg.finish(42);
    let b = msg.as_slice();
    assert_eq!(b.len(), NLMSG_HDR_LEN + IFINFOMSG_LEN + 8);
    assert_eq!(u32_at(b, 0), Some(40));
    assert_eq!(u16_at(b, 4), Some(libc::RTM_SETLINK));
    assert_eq!(u16_at(b, 6), Some(NLM_F_REQUEST | NLM_F_ACK));
    assert_eq!(u32_at(b, 8), Some(42));
    assert_eq!(u32_at(b, 20), Some(7));
    assert_eq!(u16_at(b, 32), Some(8));
    assert_eq!(u16_at(b, 34), Some(IFLA_MTU));
    assert_eq!(u32_at(b, 36), Some(1420));
}

#[test]
fn encodes_route_with_masked_destination() {
    let mut msg = route_request(libc::RTM_NEWROUTE, "10.78.9.9", 16, RouteOp::Add);
    msg.finish(1);
    let b = msg.as_slice();
    assert_eq!(b.len(), NLMSG_HDR_LEN + RTMSG_BODY_LEN + 8 + 8);
    let rtm = &b[NLMSG_HDR_LEN..NLMSG_HDR_LEN + RTMSG_BODY_LEN];
    assert_eq!(
        &rtm[..8],
        &[
            libc::AF_INET as u8,
            16,
            0,
            0,
            254,
            libc::RTPROT_BOOT,
            253,
            libc::RTN_UNICAST
        ]
    );
    let at = NLMSG_HDR_LEN + RTMSG_BODY_LEN;
    let got: Vec<_> = attrs(&b[at..]).collect();
    assert_eq!(
        got,
        vec![
            (libc::RTA_DST, &[10u8, 78, 0, 0][..]),
            (libc::RTA_OIF, &3u32.to_ne_bytes()[..])
        ]
    );

    let mut msg = route_request(libc::RTM_DELROUTE, "fd77:1::5", 32, RouteOp::Delete);
    let b = msg.as_slice();
    assert_eq!(b.len(), NLMSG_HDR_LEN + RTMSG_BODY_LEN + 20 + 8);
    assert_eq!(b[NLMSG_HDR_LEN + 6], libc::RT_SCOPE_NOWHERE);
    assert!(put_route(
        &mut msg,
        3,
        "fd77::".parse().expect("v6"),
        129,
        RouteOp::Add
    )
    .is_err());
}

#[test]
fn parses_error_and_rejects_bad_lengths() {
    // NLMSG_ERROR with errno -EEXIST and a truncated echo of the request.
    let mut b = hand_header(36, NLMSG_ERROR, 9);
    b.extend_from_slice(&(-libc::EEXIST).to_ne_bytes());
    b.extend_from_slice(&[0u8; 16]);
    let (kind, seq, payload, rest) = split_message(&b)
        .expect("well formed")
        .expect("one message");
    assert_eq!(
        (kind, seq, payload.len(), rest.len()),
        (NLMSG_ERROR, 9, 20, 0)
    );

    b[0..4].copy_from_slice(&1000u32.to_ne_bytes());
    assert!(split_message(&b).is_err());
    b[0..4].copy_from_slice(&3u32.to_ne_bytes());
    assert!(split_message(&b).is_err());
    assert!(split_message(&b[..10]).expect("too short is end").is_none());
}

#[test]
fn attribute_walk_stops_on_garbage() {
    // One good IFLA_MTU, then an attribute claiming more bytes than exist.
    let mut b = hand_attr(8, IFLA_MTU, &1500u32.to_ne_bytes());
    b.extend(hand_attr(200, IFLA_IFNAME, b"ab"));
    let got: Vec<_> = attrs(&b).collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, IFLA_MTU);
    // A zero-length attribute must not loop forever.
    let zero = [0u8; 8];
    assert_eq!(attrs(&zero).count(), 0);
}
