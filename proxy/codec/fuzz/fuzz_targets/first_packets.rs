//! Fuzzes the first bytes of a connection the way the proxy reads them: an
//! optional PROXY v2 header, then a legacy ping or a handshake, then Login
//! Start or the status request. Beyond "no panic" it checks the decoders'
//! contract, so a wrong used length or a value that a later byte changes is a
//! crash too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use respawn_codec::handshake::{NextState, hostname_part};
use respawn_codec::legacy::LegacyForm;
use respawn_codec::status::decode_status_c2s;
use respawn_codec::{Decoded, decode_handshake, decode_legacy, decode_login_start};
use respawn_codec::proxy_protocol::{Inbound, decode_inbound};
use respawn_codec::handshake::normalize_host;

fuzz_target!(|data: &[u8]| first_packets(data));

fn first_packets(data: &[u8]) {
    let rest = match decode_inbound(data) {
        Ok(Some(Inbound::Present { len, .. })) => {
            assert!((16..=data.len()).contains(&len), "PROXY header of {len} in {} bytes", data.len());
            &data[len..]
        }
        Ok(Some(Inbound::Absent)) => data,
        Ok(None) | Err(_) => return,
    };

    let waiting = decode_legacy(rest, true);
    let done = decode_legacy(rest, false);
    used_within(&waiting, rest);
    used_within(&done, rest);
    match (&waiting, &done) {
        // The wait only turns "need more" into the bare forms.
        (Ok(None), Ok(Some((ping, used)))) => {
            assert!(matches!(ping.form, LegacyForm::Beta | LegacyForm::V1_4), "{ping:?}");
            assert_eq!(*used, rest.len());
        }
        (Ok(None), Ok(None)) => assert!(rest.is_empty()),
        _ => assert_eq!(waiting, done),
    }

    let Ok(Some((hs, used))) = decode_handshake(rest) else { return };
    assert!(used <= rest.len());
    // The handshake decodes from exactly its own bytes, as the proxy forwards them.
    assert_eq!(decode_handshake(&rest[..used]), Ok(Some((hs.clone(), used))));
    assert!(hostname_part(&hs.host).len() <= 255);
    let _ = normalize_host(&hs.host);

    let after = &rest[used..];
    match hs.next_state {
        NextState::Status => {
            let r = decode_status_c2s(after);
            used_within(&r, after);
            if let Ok(Some((_, n))) = r {
                let _ = decode_status_c2s(&after[n..]);
            }
        }
        NextState::Login | NextState::Transfer => {
            let r = decode_login_start(after, hs.protocol);
            used_within(&r, after);
            if let Ok(Some((ls, _))) = &r {
                let chars = ls.name.chars().count();
                assert!((1..=16).contains(&chars), "username {:?}", ls.name);
            }
        }
    }
}

/// A decoded value uses at least one byte and no more than it was given.
fn used_within<T>(r: &Decoded<T>, input: &[u8]) {
    if let Ok(Some((_, used))) = r {
        assert!(*used >= 1 && *used <= input.len(), "used {used} of {} bytes", input.len());
    }
}
