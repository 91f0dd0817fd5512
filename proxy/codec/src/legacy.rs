//! The pre-1.7 server-list ping (first byte 0xFE), in its three forms:
//! `fe` (beta 1.8–1.3), `fe 01` (1.4–1.5) and `fe 01 fa MC|PingHost …` (1.6,
//! which may arrive in pieces). Modern servers still answer it, and status
//! tools such as mcstatus's `LegacyServer` send `fe 01 fa` with nothing after.
//!
//! The beta and 1.4 forms have no terminator, so "is more coming?" cannot be
//! told from the bytes: the caller passes `more_may_come = false` once its
//! short legacy wait has passed, and gets the best-effort form.

use super::{Decoded, ProtocolError};

const PING_HOST_CHANNEL: &str = "MC|PingHost";
const MAX_LEGACY_HOST_CHARS: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyForm {
    /// `fe`: reply `motd§online§max`.
    Beta,
    /// `fe 01` (and `fe 01 fa` without a complete PingHost): reply `§1\0…`.
    V1_4,
    /// `fe 01 fa` + MC|PingHost: carries protocol, host and port.
    V1_6,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyPing {
    pub form: LegacyForm,
    pub protocol: Option<u8>,
    pub host: Option<String>,
    pub port: Option<u16>,
}

impl LegacyPing {
    fn bare(form: LegacyForm) -> Self {
        Self { form, protocol: None, host: None, port: None }
    }
}

/// Is this the first byte of a legacy ping? (Vanilla servers decide on 0xFE alone.)
pub fn is_legacy(first: u8) -> bool {
    first == 0xFE
}

pub fn decode_legacy(buf: &[u8], more_may_come: bool) -> Decoded<LegacyPing> {
    let pending = |form| if more_may_come { Ok(None) } else { Ok(Some((LegacyPing::bare(form), buf.len()))) };
    match buf {
        [] => Ok(None),
        [first, ..] if *first != 0xFE => Err(ProtocolError::Invalid("legacy ping marker")),
        [_] => pending(LegacyForm::Beta),
        [_, second, ..] if *second != 0x01 => Err(ProtocolError::Invalid("legacy ping payload")),
        [_, _] => pending(LegacyForm::V1_4),
        [_, _, third, ..] if *third != 0xFA => {
            Err(ProtocolError::TrailingBytes { packet: "legacy ping", count: buf.len() - 2 })
        }
        [_, _, _, rest @ ..] => match decode_ping_host(rest)? {
            Some((ping, used)) => Ok(Some((ping, 3 + used))),
            None => pending(LegacyForm::V1_4),
        },
    }
}

/// The MC|PingHost plugin message after `fe 01 fa`.
fn decode_ping_host(buf: &[u8]) -> Decoded<LegacyPing> {
    let mut pos = 0;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = buf.get(pos..pos + n)?;
        pos += n;
        Some(s)
    };
    let Some(chan_len) = take(2) else { return Ok(None) };
    let chan_len = usize::from(u16::from_be_bytes([chan_len[0], chan_len[1]]));
    if chan_len != PING_HOST_CHANNEL.len() {
        return Err(ProtocolError::Invalid("legacy ping channel"));
    }
    let Some(chan) = take(chan_len * 2) else { return Ok(None) };
    if utf16be(chan).as_deref() != Some(PING_HOST_CHANNEL) {
        return Err(ProtocolError::Invalid("legacy ping channel"));
    }
    let Some(data_len) = take(2) else { return Ok(None) };
    let data_len = usize::from(u16::from_be_bytes([data_len[0], data_len[1]]));
    // protocol (1) + host length (2) + host + port (4)
    if !(7..=7 + 2 * MAX_LEGACY_HOST_CHARS).contains(&data_len) {
        return Err(ProtocolError::Invalid("legacy ping data length"));
    }
    let Some(data) = take(data_len) else { return Ok(None) };
    let protocol = data[0];
    let host_chars = usize::from(u16::from_be_bytes([data[1], data[2]]));
    if 3 + host_chars * 2 + 4 != data_len {
        return Err(ProtocolError::Invalid("legacy ping host length"));
    }
    let host = utf16be(&data[3..3 + host_chars * 2]).ok_or(ProtocolError::InvalidUtf8("legacy ping host"))?;
    let port_bytes = &data[3 + host_chars * 2..];
    let port = u32::from_be_bytes(port_bytes.try_into().expect("4 bytes"));
    let port = u16::try_from(port).map_err(|_| ProtocolError::Invalid("legacy ping port"))?;
    let ping = LegacyPing { form: LegacyForm::V1_6, protocol: Some(protocol), host: Some(host), port: Some(port) };
    Ok(Some((ping, pos)))
}

fn utf16be(bytes: &[u8]) -> Option<String> {
    let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    String::from_utf16(&units).ok()
}

/// What a legacy reply shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyStatus<'a> {
    pub protocol: i32,
    pub version: &'a str,
    pub motd: &'a str,
    pub online: i64,
    pub max: i64,
}

/// Encodes the kick packet (0xFF) that carries a legacy status reply.
pub fn encode_legacy_response(form: LegacyForm, s: &LegacyStatus<'_>) -> Vec<u8> {
    let text = match form {
        // Beta clients split on '§', so the MOTD must not contain one.
        LegacyForm::Beta => format!("{}§{}§{}", s.motd.replace('§', ""), s.online, s.max),
        LegacyForm::V1_4 | LegacyForm::V1_6 => {
            format!("§1\0{}\0{}\0{}\0{}\0{}", s.protocol, s.version, s.motd, s.online, s.max)
        }
    };
    let units: Vec<u16> = text.encode_utf16().take(u16::MAX as usize).collect();
    let mut out = Vec::with_capacity(3 + units.len() * 2);
    out.push(0xFF);
    out.extend_from_slice(&(units.len() as u16).to_be_bytes());
    for u in units {
        out.extend_from_slice(&u.to_be_bytes());
    }
    out
}

/// Encodes a 1.6 ping with MC|PingHost (tests and bench).
pub fn encode_legacy_v1_6(protocol: u8, host: &str, port: u16) -> Vec<u8> {
    let mut out = vec![0xFE, 0x01, 0xFA];
    let chan: Vec<u16> = PING_HOST_CHANNEL.encode_utf16().collect();
    out.extend_from_slice(&(chan.len() as u16).to_be_bytes());
    chan.iter().for_each(|u| out.extend_from_slice(&u.to_be_bytes()));
    let host16: Vec<u16> = host.encode_utf16().collect();
    out.extend_from_slice(&((7 + host16.len() * 2) as u16).to_be_bytes());
    out.push(protocol);
    out.extend_from_slice(&(host16.len() as u16).to_be_bytes());
    host16.iter().for_each(|u| out.extend_from_slice(&u.to_be_bytes()));
    out.extend_from_slice(&u32::from(port).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_forms() {
        assert_eq!(decode_legacy(&[0xFE], true), Ok(None));
        assert_eq!(decode_legacy(&[0xFE], false).unwrap().unwrap().0.form, LegacyForm::Beta);
        assert_eq!(decode_legacy(&[0xFE, 1], false).unwrap().unwrap().0.form, LegacyForm::V1_4);
        // mcstatus's LegacyServer: fe 01 fa and nothing after.
        assert_eq!(decode_legacy(&[0xFE, 1, 0xFA], true), Ok(None));
        assert_eq!(decode_legacy(&[0xFE, 1, 0xFA], false).unwrap().unwrap().0.form, LegacyForm::V1_4);
        let full = encode_legacy_v1_6(78, "Survival.Acme.Example", 25565);
        for cut in 1..full.len() {
            assert_eq!(decode_legacy(&full[..cut], true), Ok(None), "cut {cut}");
        }
        let (ping, used) = decode_legacy(&full, true).unwrap().unwrap();
        assert_eq!(used, full.len());
        assert_eq!(ping.host.as_deref(), Some("Survival.Acme.Example"));
        assert_eq!(ping.port, Some(25565));
        assert_eq!(ping.protocol, Some(78));
    }

    #[test]
    fn garbage_is_invalid() {
        assert!(decode_legacy(&[0xFE, 2], true).is_err());
        assert!(decode_legacy(&[0xFE, 1, 0xFB], true).is_err());
        let mut bad = encode_legacy_v1_6(78, "a", 1);
        bad[4] = 12; // wrong channel length
        assert!(decode_legacy(&bad, true).is_err());
    }

    #[test]
    fn response_layout() {
        let s = LegacyStatus { protocol: 127, version: "1.20.4", motd: "Hi", online: 1, max: 20 };
        let out = encode_legacy_response(LegacyForm::V1_6, &s);
        assert_eq!(out[0], 0xFF);
        let text = utf16be(&out[3..]).unwrap();
        assert_eq!(text, "§1\u{0}127\u{0}1.20.4\u{0}Hi\u{0}1\u{0}20");
        assert_eq!(usize::from(u16::from_be_bytes([out[1], out[2]])), text.encode_utf16().count());
        let beta = encode_legacy_response(LegacyForm::Beta, &s);
        assert_eq!(utf16be(&beta[3..]).unwrap(), "Hi§1§20");
    }
}
