//! Property tests for the sans-IO codec: what the encoders write the decoders
//! read back, and on any bytes at all every decoder keeps its contract —
//! no panic, a used length within the input, and answers that stay true as
//! more bytes arrive (a value never changes, an error never turns into "need
//! more"), because the connection code re-runs the decoder on a growing buffer.
//!
//! Past 500 lines: one property suite per decoder, sharing its generators.

use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use respawn_codec::frame::{MAX_FRAME_LEN, encode_packet, put_string, put_varint};
use respawn_codec::handshake::{Handshake, MAX_HOSTNAME_BYTES, NextState, encode_handshake, hostname_part};
use respawn_codec::legacy::{LegacyForm, LegacyPing, encode_legacy_v1_6};
use respawn_codec::login::versions::SNAPSHOT_BIT;
use respawn_codec::login::{LoginStart, SignatureData, encode_login_start};
use respawn_codec::proxy_protocol::{Inbound, decode_inbound, encode_header};
use respawn_codec::status::{
    decode_pong, decode_status_c2s, decode_status_response, encode_ping, encode_pong, encode_status_request,
    encode_status_response,
};
use respawn_codec::{Decoded, ProtocolError, decode_frame, decode_handshake, decode_legacy, decode_login_start};

// ---------------------------------------------------------------------------
// Generators (the composite ones are boxed: unboxed, their nested value-tree
// types overflow a test thread's 2 MiB stack in a debug build)
// ---------------------------------------------------------------------------

fn next_state() -> impl Strategy<Value = NextState> {
    prop_oneof![Just(NextState::Status), Just(NextState::Login), Just(NextState::Transfer)]
}

/// Any string of at most `max` UTF-8 bytes (any chars, NUL and `///` included).
fn utf8_up_to(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..=max).prop_map(move |chars| {
        let mut s = String::new();
        for c in chars {
            if s.len() + c.len_utf8() > max {
                break;
            }
            s.push(c);
        }
        s
    })
}

/// What clients and TCPShield append after the hostname, up to the 512 bytes
/// the decoder allows for it.
fn host_suffix() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just("\0FML\0".to_owned()),
        Just("\0FML2\0".to_owned()),
        Just("\0FML3\0".to_owned()),
        Just("\0FORGE".to_owned()),
        (any::<IpAddr>(), any::<u16>(), any::<u32>(), "[A-Za-z0-9+/]{0,344}={0,2}")
            .prop_map(|(ip, port, ts, sig)| format!("///{}///{ts}///{sig}", SocketAddr::new(ip, port))),
        utf8_up_to(511).prop_map(|s| format!("\0{s}")),
    ]
    .boxed()
}

/// Protocol numbers around every Login Start layout change, release and
/// snapshot, and anything else.
fn protocol() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => prop::sample::select(vec![4, 5, 47, 340, 754, 758, 759, 760, 761, 762, 763, 764, 765, 766, 769, 774, 775]),
        1 => (0..SNAPSHOT_BIT).prop_map(|n| SNAPSHOT_BIT | n),
        1 => 0..SNAPSHOT_BIT,
        1 => any::<i32>(),
    ]
}

/// A username: 1–16 characters of any kind.
fn username() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9_]{1,16}", vec(any::<char>(), 1..=16).prop_map(|c| c.into_iter().collect()),]
}

fn handshake_bytes() -> BoxedStrategy<Vec<u8>> {
    (any::<i32>(), utf8_up_to(MAX_HOSTNAME_BYTES), host_suffix(), any::<u16>(), next_state())
        .prop_map(|(protocol, name, suffix, port, next_state)| {
            encode_handshake(&Handshake { protocol, host: name + &suffix, port, next_state })
        })
        .boxed()
}

/// A 1.19 (759) or 1.19.1 (760) Login Start carrying player key data, laid
/// out as those versions send it: name, `true`, expiry, key, signature, and
/// for 760 the optional UUID.
fn signed_login_start(protocol: i32, name: &str, expiry: i64, key: &[u8], sig: &[u8], uuid: Option<u128>) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, name);
    body.push(1);
    body.extend_from_slice(&expiry.to_be_bytes());
    put_varint(&mut body, key.len() as i32);
    body.extend_from_slice(key);
    put_varint(&mut body, sig.len() as i32);
    body.extend_from_slice(sig);
    if protocol == 760 {
        match uuid {
            Some(u) => {
                body.push(1);
                body.extend_from_slice(&u.to_be_bytes());
            }
            None => body.push(0),
        }
    }
    encode_packet(0x00, &body)
}

/// Login Start bytes and the protocol they were written for, including the
/// 1.19 / 1.19.1 signature data the encoder never writes.
fn login_case() -> BoxedStrategy<(Vec<u8>, i32)> {
    let plain = (protocol(), username(), any::<Option<u128>>())
        .prop_map(|(p, name, uuid)| (encode_login_start(&name, uuid, p), p));
    let signed = (
        prop::sample::select(vec![759, 760]),
        username(),
        any::<i64>(),
        vec(any::<u8>(), 0..600),
        vec(any::<u8>(), 0..600),
        any::<Option<u128>>(),
    )
        .prop_map(|(p, name, expiry, key, sig, uuid)| (signed_login_start(p, &name, expiry, &key, &sig, uuid), p));
    // Bytes written for one layout, read with another.
    let mismatched = (protocol(), username(), any::<Option<u128>>(), protocol())
        .prop_map(|(p, name, uuid, read_as)| (encode_login_start(&name, uuid, p), read_as));
    prop_oneof![3 => plain, 2 => signed, 1 => mismatched].boxed()
}

/// PROXY v2 headers, from the encoder and by hand (LOCAL, TLVs, UNIX
/// addresses), followed by a handshake.
fn proxy_header_bytes() -> BoxedStrategy<Vec<u8>> {
    // The v2 signature, from the PROXY protocol specification.
    const SIG: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];
    let encoded = (any::<SocketAddr>(), any::<SocketAddr>()).prop_map(|(c, l)| encode_header(c, l));
    let by_hand = (
        prop::sample::select(vec![0x20u8, 0x21]),
        prop::sample::select(vec![0x00u8, 0x11, 0x12, 0x21, 0x31]),
        vec(any::<u8>(), 0..300),
    )
        .prop_map(|(version_command, family, payload)| {
            let mut out = SIG.to_vec();
            out.push(version_command);
            out.push(family);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            out.extend(payload);
            out
        });
    (prop_oneof![encoded, by_hand], handshake_bytes())
        .prop_map(|(mut header, hs)| {
            header.extend(hs);
            header
        })
        .boxed()
}

fn status_c2s_bytes() -> BoxedStrategy<Vec<u8>> {
    (any::<bool>(), any::<i64>())
        .prop_map(|(request, payload)| {
            let mut out = if request { encode_status_request() } else { Vec::new() };
            out.extend(encode_ping(payload));
            out
        })
        .boxed()
}

fn status_response_bytes() -> BoxedStrategy<Vec<u8>> {
    utf8_up_to(400).prop_map(|json| encode_status_response(&json)).boxed()
}

fn pong_bytes() -> BoxedStrategy<Vec<u8>> {
    any::<i64>().prop_map(encode_pong).boxed()
}

fn legacy_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        Just(vec![0xFE]),
        Just(vec![0xFE, 0x01]),
        Just(vec![0xFE, 0x01, 0xFA]),
        (any::<u8>(), utf8_up_to(300), any::<u16>()).prop_map(|(p, host, port)| encode_legacy_v1_6(p, &host, port)),
    ]
    .boxed()
}

/// Everything above: what a peer could send first.
fn valid_stream() -> BoxedStrategy<Vec<u8>> {
    let handshake_then_login = (handshake_bytes(), login_case()).prop_map(|(mut hs, (login, _))| {
        hs.extend(login);
        hs
    });
    let packet = (any::<i32>(), vec(any::<u8>(), 0..64)).prop_map(|(id, body)| encode_packet(id, &body));
    prop_oneof![
        handshake_bytes(),
        handshake_then_login,
        status_c2s_bytes(),
        status_response_bytes(),
        pong_bytes(),
        legacy_bytes(),
        proxy_header_bytes(),
        packet,
    ]
    .boxed()
}

/// Noise, the valid bytes as they are, or the valid bytes after a few byte
/// overwrites, an optional cut and some tail. Noise alone rarely gets past the
/// first length check; damaged traffic reaches every field.
fn damaged(valid: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    let mutated = (
        valid.clone(),
        vec((any::<Index>(), any::<u8>()), 0..4),
        prop::option::of(any::<Index>()),
        vec(any::<u8>(), 0..16),
    )
        .prop_map(|(mut bytes, edits, cut, tail)| {
            if !bytes.is_empty() {
                for (at, byte) in edits {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes.extend(tail);
            bytes
        });
    prop_oneof![
        2 => vec(any::<u8>(), 0..64),
        1 => vec(any::<u8>(), 0..1024),
        1 => valid_stream(),
        2 => valid,
        4 => mutated,
    ]
    .boxed()
}

/// Limits to give `decode_frame` / `decode_status_response`.
fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![0..300usize, Just(MAX_FRAME_LEN), Just(MAX_FRAME_LEN + 1), any::<usize>()]
}

// ---------------------------------------------------------------------------
// The contract every `Decoded` parser keeps
// ---------------------------------------------------------------------------

/// Checks `decode` on `input` and on each of its prefixes:
/// - a value uses at least one byte and no more than it was given;
/// - once a prefix gives a value, every longer input gives that same value
///   (the bytes after a packet belong to the next one);
/// - once a prefix gives an error, every longer input gives an error too
///   ("can never be valid" must not turn into "need more");
/// - the bytes of a complete value, cut anywhere short, only ask for more.
fn check_contract<T: PartialEq + Debug>(
    input: &[u8],
    decode: impl Fn(&[u8]) -> Decoded<T>,
) -> Result<(), TestCaseError> {
    let full = decode(input);
    if let Ok(Some((_, used))) = &full {
        prop_assert!(*used >= 1 && *used <= input.len(), "used {} of {} bytes", used, input.len());
    }
    let complete_at = match &full {
        Ok(Some((_, used))) => Some(*used),
        _ => None,
    };
    for cut in 0..input.len() {
        let part = decode(&input[..cut]);
        match (&part, complete_at) {
            (_, Some(used)) if cut < used => {
                prop_assert_eq!(&part, &Ok(None), "prefix of {} bytes of a {}-byte value", cut, used)
            }
            (Ok(Some(_)), _) => prop_assert_eq!(&part, &full, "a {}-byte prefix gave a different value", cut),
            (Err(e), _) => prop_assert!(full.is_err(), "a {}-byte prefix gave {:?}, the whole gave {:?}", cut, e, full),
            (Ok(None), _) => {}
        }
    }
    Ok(())
}

/// `decode_frame` with the frame copied out of the buffer it borrows.
fn frame_owned(buf: &[u8], max: usize) -> Decoded<(i32, Vec<u8>)> {
    Ok(decode_frame(buf, max)?.map(|(frame, used)| ((frame.id, frame.body.to_vec()), used)))
}

fn config() -> ProptestConfig {
    ProptestConfig { failure_persistence: None, ..ProptestConfig::default() }
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn handshake_roundtrip(
        protocol in any::<i32>(),
        name in utf8_up_to(MAX_HOSTNAME_BYTES),
        suffix in host_suffix(),
        port in any::<u16>(),
        next_state in next_state(),
        trailing in vec(any::<u8>(), 0..32),
    ) {
        let hs = Handshake { protocol, host: name + &suffix, port, next_state };
        let mut bytes = encode_handshake(&hs);
        let len = bytes.len();
        for cut in 0..len {
            prop_assert_eq!(decode_handshake(&bytes[..cut]), Ok(None), "cut {}", cut);
        }
        bytes.extend(trailing);
        prop_assert_eq!(decode_handshake(&bytes), Ok(Some((hs, len))));
    }

    #[test]
    fn handshake_refuses_hostnames_over_255_bytes(
        name in "[a-z0-9.-]{256,400}",
        suffix in prop_oneof![Just(""), Just("\0FML3\0"), Just("///1.2.3.4:5///1///sig")],
    ) {
        let host = format!("{name}{suffix}");
        prop_assert!(hostname_part(&host).len() > MAX_HOSTNAME_BYTES);
        let bytes = encode_handshake(&Handshake { protocol: 767, host, port: 25565, next_state: NextState::Login });
        let refused = matches!(decode_handshake(&bytes), Err(ProtocolError::TooLong { field: "hostname", .. }));
        prop_assert!(refused, "{:?}", decode_handshake(&bytes));
    }

    #[test]
    fn login_start_roundtrip(
        protocol in protocol(),
        name in username(),
        uuid in any::<Option<u128>>(),
        trailing in vec(any::<u8>(), 0..32),
    ) {
        let mut bytes = encode_login_start(&name, uuid, protocol);
        let len = bytes.len();
        for cut in 0..len {
            prop_assert_eq!(decode_login_start(&bytes[..cut], protocol), Ok(None), "cut {}", cut);
        }
        bytes.extend(trailing);
        let (ls, used) = decode_login_start(&bytes, protocol)?.expect("a complete Login Start");
        prop_assert_eq!(used, len);
        prop_assert_eq!(&ls.name, &name);
        prop_assert_eq!(ls.signature, None);
        // The layouts by protocol number, from the protocol's history: no UUID
        // before 1.19.1 (760), optional up to 1.20.1 (763), always from 1.20.2
        // (764); snapshots (bit 30) use the newest layout.
        if protocol >= 0 {
            let want = if protocol & SNAPSHOT_BIT != 0 || protocol >= 764 {
                Some(uuid.unwrap_or(0))
            } else if protocol >= 760 {
                uuid
            } else {
                None
            };
            prop_assert_eq!(ls.uuid, want, "protocol {}", protocol);
        }
    }

    #[test]
    fn login_start_signature_data_is_read_past(
        protocol in prop::sample::select(vec![759, 760]),
        name in username(),
        expiry in any::<i64>(),
        key in vec(any::<u8>(), 0..600),
        sig in vec(any::<u8>(), 0..600),
        uuid in any::<Option<u128>>(),
    ) {
        let bytes = signed_login_start(protocol, &name, expiry, &key, &sig, uuid);
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode_login_start(&bytes[..cut], protocol), Ok(None), "cut {}", cut);
        }
        let got = decode_login_start(&bytes, protocol);
        // The decoder's bounds: a 512-byte key (an RSA-2048 key is ~294) and a
        // 4 KiB signature.
        if key.len() > 512 {
            let refused = matches!(got, Err(ProtocolError::TooLong { field: "public key", .. }));
            prop_assert!(refused, "{:?}", got);
        } else {
            let want = LoginStart {
                name,
                uuid: if protocol == 760 { uuid } else { None },
                signature: Some(SignatureData {
                    expires_at: expiry,
                    public_key_len: key.len(),
                    signature_len: sig.len(),
                }),
            };
            prop_assert_eq!(got, Ok(Some((want, bytes.len()))));
        }
    }

    #[test]
    fn legacy_v1_6_roundtrip(
        protocol in any::<u8>(),
        host in utf8_up_to(300),
        port in any::<u16>(),
        trailing in vec(any::<u8>(), 0..8),
    ) {
        let mut bytes = encode_legacy_v1_6(protocol, &host, port);
        let len = bytes.len();
        bytes.extend(trailing);
        if host.encode_utf16().count() <= 255 {
            let ping =
                LegacyPing { form: LegacyForm::V1_6, protocol: Some(protocol), host: Some(host), port: Some(port) };
            let want = Ok(Some((ping, len)));
            prop_assert_eq!(&decode_legacy(&bytes, true), &want);
            prop_assert_eq!(&decode_legacy(&bytes, false), &want);
            prop_assert_eq!(decode_legacy(&[], false), Ok(None));
            for cut in 1..len {
                prop_assert_eq!(decode_legacy(&bytes[..cut], true), Ok(None), "cut {}", cut);
                // After the wait a cut-off 1.6 ping is answered as the form it got to.
                let form = if cut == 1 { LegacyForm::Beta } else { LegacyForm::V1_4 };
                let (early, used) = decode_legacy(&bytes[..cut], false)?.expect("answered after the wait");
                prop_assert_eq!((early.form, used), (form, cut));
            }
        } else {
            prop_assert!(decode_legacy(&bytes, true).is_err());
        }
    }

    #[test]
    fn proxy_header_roundtrip(
        client_ip in any::<IpAddr>(), client_port in any::<u16>(),
        local_ip in any::<IpAddr>(), local_port in any::<u16>(),
        trailing in vec(any::<u8>(), 0..32),
    ) {
        let client = SocketAddr::new(client_ip, client_port);
        let mut bytes = encode_header(client, SocketAddr::new(local_ip, local_port));
        let len = bytes.len();
        for cut in 0..len {
            prop_assert_eq!(decode_inbound(&bytes[..cut]), Ok(None), "cut {}", cut);
        }
        // Mixed families go out as IPv6, the IPv4 side mapped.
        let source = match (client_ip, local_ip) {
            (IpAddr::V4(v4), IpAddr::V6(_)) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), client_port),
            _ => client,
        };
        bytes.extend(trailing);
        prop_assert_eq!(decode_inbound(&bytes), Ok(Some(Inbound::Present { source: Some(source), len })));
    }
}

// ---------------------------------------------------------------------------
// Any bytes at all
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frame_on_any_bytes(input in damaged(valid_stream()), max in limit()) {
        check_contract(&input, |b| frame_owned(b, max))?;
    }

    #[test]
    fn handshake_on_any_bytes(input in damaged(handshake_bytes())) {
        check_contract(&input, decode_handshake)?;
    }

    #[test]
    fn login_start_on_any_bytes(
        (input, protocol) in login_case().prop_flat_map(|(bytes, p)| (damaged(Just(bytes).boxed()), Just(p))),
    ) {
        check_contract(&input, |b| decode_login_start(b, protocol))?;
    }

    #[test]
    fn status_c2s_on_any_bytes(input in damaged(status_c2s_bytes())) {
        check_contract(&input, decode_status_c2s)?;
    }

    #[test]
    fn status_response_on_any_bytes(input in damaged(status_response_bytes()), max in limit()) {
        check_contract(&input, |b| decode_status_response(b, max))?;
    }

    #[test]
    fn pong_on_any_bytes(input in damaged(pong_bytes())) {
        check_contract(&input, decode_pong)?;
    }

    #[test]
    fn legacy_on_any_bytes(input in damaged(legacy_bytes())) {
        check_contract(&input, |b| decode_legacy(b, true))?;
        // After the wait the answer is the same, except that "need more"
        // becomes the best-effort bare form, using everything buffered.
        let waiting = decode_legacy(&input, true);
        let done = decode_legacy(&input, false);
        match waiting {
            Ok(None) if input.is_empty() => prop_assert_eq!(done, Ok(None)),
            Ok(None) => {
                let (ping, used) = done?.expect("an answer after the wait");
                prop_assert!(matches!(ping.form, LegacyForm::Beta | LegacyForm::V1_4), "{:?}", ping);
                prop_assert_eq!((ping.protocol, ping.host, ping.port), (None, None, None));
                prop_assert_eq!(used, input.len());
            }
            other => prop_assert_eq!(done, other),
        }
    }

    #[test]
    fn proxy_inbound_on_any_bytes(input in damaged(proxy_header_bytes())) {
        let full = decode_inbound(&input);
        if let Ok(Some(Inbound::Present { len, .. })) = full {
            prop_assert!((16..=input.len()).contains(&len), "header of {} in {} bytes", len, input.len());
        }
        let complete_at = match full {
            Ok(Some(Inbound::Present { len, .. })) => Some(len),
            _ => None,
        };
        for cut in 0..input.len() {
            let part = decode_inbound(&input[..cut]);
            match (&part, complete_at) {
                (_, Some(len)) if cut < len => prop_assert_eq!(&part, &Ok(None), "cut {}", cut),
                (Ok(Some(_)), _) => prop_assert_eq!(&part, &full, "cut {}", cut),
                (Err(_), _) => prop_assert!(full.is_err(), "cut {} gave {:?}, the whole {:?}", cut, part, full),
                (Ok(None), _) => {}
            }
        }
    }
}
