//! Follows the server → client stream of a relayed login just far enough to
//! say a last word to the player when the backend goes away mid-game.
//!
//! A vanilla client that loses its connection shows "Connection lost" with a
//! Java exception; a server that crashed deserves a sentence instead. To send
//! one the proxy must know, at the moment the backend's stream ends:
//! - that it is at a packet boundary (it never injects into half a frame),
//! - the state the client is in (login, configuration or play), because the
//!   Disconnect packet id differs per state and per protocol version,
//! - whether compression is on (frames then carry a data-length prefix).
//!
//! So the tracker reads every frame's length prefix and the first few bytes
//! of each packet: Set Compression, Login Success, Finish Configuration and
//! Start Configuration move it along, and a Disconnect as the last packet
//! means the server ended the session itself (a kick, a full server, a
//! whitelist): then the proxy adds nothing, because nothing went wrong. A
//! Disconnect compressed past the threshold (its id is inside zlib) is not
//! recognised; kicks are a few dozen bytes, far below the usual 256. An
//! Encryption Request means online mode: everything after it is encrypted
//! between client and server, so the tracker gives up (`Lost`) and the proxy
//! relays blindly, as it would anyway. Anything that does not parse (a
//! non-Minecraft stream, an oversized frame) also ends in `Lost`.
//!
//! Hand-written rather than with valence_protocol's decoder: that decoder
//! wants whole frames in one buffer and decompresses them, while this must
//! cost next to nothing on a relay that forwards chunks as they arrive.
//!
//! One cohesive thing past 500 lines: the per-version id table, the
//! byte-at-a-time follower and its tests only make sense together.

use valence_protocol::{Encode, VarInt};

use super::frame::{MAX_FRAME_LEN, put_string};

/// Oldest and newest protocol numbers with known packet ids (1.7.2 → 26.1).
pub const OLDEST_KNOWN_PROTOCOL: i32 = 4;
pub const NEWEST_KNOWN_PROTOCOL: i32 = 775;

/// First protocol with a configuration state (1.20.2).
const CONFIGURATION_SINCE: i32 = 764;
/// First protocol whose text components travel as NBT (1.20.3).
const NBT_TEXT_SINCE: i32 = 765;
/// First protocol with Set Compression (1.8).
const COMPRESSION_SINCE: i32 = 47;

/// Packet ids that change between versions, from the protocol number they
/// start at. Read from minecraft-data's protocol.json for every release
/// (`kick_disconnect` in play, `disconnect`, `finish_configuration` in
/// configuration, `start_configuration` in play); login ids never moved.
struct Ids {
    since: i32,
    play_disconnect: i32,
    /// Configuration-state ids, for protocols that have it.
    config: Option<ConfigIds>,
}

#[derive(Clone, Copy)]
struct ConfigIds {
    disconnect: i32,
    finish: i32,
    /// Play-state Start Configuration (back to configuration).
    start_in_play: i32,
}

const fn ids(since: i32, play_disconnect: i32) -> Ids {
    Ids { since, play_disconnect, config: None }
}

const fn ids_cfg(since: i32, play_disconnect: i32, disconnect: i32, finish: i32, start_in_play: i32) -> Ids {
    Ids { since, play_disconnect, config: Some(ConfigIds { disconnect, finish, start_in_play }) }
}

const IDS: &[Ids] = &[
    ids(4, 0x40),                         // 1.7.2 – 1.8.9
    ids(107, 0x1a),                       // 1.9 – 1.12.2
    ids(393, 0x1b),                       // 1.13 – 1.13.2
    ids(477, 0x1a),                       // 1.14 – 1.14.4
    ids(573, 0x1b),                       // 1.15 – 1.15.2
    ids(735, 0x1a),                       // 1.16 – 1.16.1
    ids(751, 0x19),                       // 1.16.2 – 1.16.5
    ids(755, 0x1a),                       // 1.17 – 1.18.2
    ids(759, 0x17),                       // 1.19
    ids(760, 0x19),                       // 1.19.1 – 1.19.2
    ids(761, 0x17),                       // 1.19.3
    ids(762, 0x1a),                       // 1.19.4 – 1.20.1
    ids_cfg(764, 0x1b, 0x01, 0x02, 0x65), // 1.20.2
    ids_cfg(765, 0x1b, 0x01, 0x02, 0x67), // 1.20.3 – 1.20.4
    ids_cfg(766, 0x1d, 0x02, 0x03, 0x69), // 1.20.5 – 1.21.1
    ids_cfg(768, 0x1d, 0x02, 0x03, 0x70), // 1.21.2 – 1.21.4
    ids_cfg(770, 0x1c, 0x02, 0x03, 0x6f), // 1.21.5 – 1.21.8
    ids_cfg(773, 0x20, 0x02, 0x03, 0x74), // 1.21.9 – 1.21.11
    ids_cfg(775, 0x20, 0x02, 0x03, 0x76), // 26.1
];

fn ids_for(protocol: i32) -> Option<&'static Ids> {
    if !(OLDEST_KNOWN_PROTOCOL..=NEWEST_KNOWN_PROTOCOL).contains(&protocol) {
        return None;
    }
    IDS.iter().rev().find(|ids| ids.since <= protocol)
}

/// Where the client is, as far as the server's packets tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Login,
    Configuration,
    Play,
    /// Encrypted, unknown version or not Minecraft: no more injecting.
    Lost,
}

/// How many bytes of a packet (after its length) the tracker looks at: the
/// data-length VarInt (≤ 4 bytes), the id (≤ 5) and Set Compression's
/// threshold (≤ 5).
const HEAD: usize = 14;

#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// Reading a frame's length VarInt.
    Len { value: u32, bytes: u8 },
    /// Collecting the first bytes of a packet of `frame_len` bytes.
    Head { frame_len: usize, buf: [u8; HEAD], have: u8, want: u8 },
    /// Skipping the rest of a packet.
    Skip { remaining: usize },
}

/// The server → client half of one relayed login. Feed it every chunk in
/// order; ask it for a Disconnect when the server's stream ends.
#[derive(Debug, Clone)]
pub struct ClientboundTracker {
    protocol: i32,
    stage: Stage,
    /// Set Compression's threshold, once compression is on.
    compression: Option<i32>,
    cursor: Cursor,
    /// The last whole packet seen was the state's Disconnect.
    goodbye: bool,
}

impl ClientboundTracker {
    /// A tracker for a login whose Login Start has just been forwarded.
    pub fn new(protocol: i32) -> ClientboundTracker {
        let stage = if ids_for(protocol).is_some() { Stage::Login } else { Stage::Lost };
        ClientboundTracker {
            protocol,
            stage,
            compression: None,
            cursor: Cursor::Len { value: 0, bytes: 0 },
            goodbye: false,
        }
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// False once it has given up: nothing it could see would matter any
    /// more, so the relay need not show it the bytes.
    pub fn following(&self) -> bool {
        self.stage != Stage::Lost
    }

    pub fn compression(&self) -> Option<i32> {
        self.compression
    }

    /// True when the server's last packet, complete, was a Disconnect: a
    /// stream that ends here was ended by the server on purpose.
    pub fn server_said_goodbye(&self) -> bool {
        self.goodbye && self.at_boundary() && self.stage != Stage::Lost
    }

    /// True between frames.
    pub fn at_boundary(&self) -> bool {
        matches!(self.cursor, Cursor::Len { bytes: 0, .. })
    }

    /// Follows `bytes`, the next chunk the server sent.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.stage != Stage::Lost {
            match &mut self.cursor {
                Cursor::Skip { remaining } => {
                    let n = (*remaining).min(bytes.len());
                    *remaining -= n;
                    bytes = &bytes[n..];
                    if *remaining == 0 {
                        self.cursor = Cursor::Len { value: 0, bytes: 0 };
                    }
                }
                Cursor::Len { value, bytes: used } => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    *value |= u32::from(b & 0x7f) << (7 * u32::from(*used));
                    *used += 1;
                    if b & 0x80 != 0 {
                        if *used >= 3 {
                            // Longer than any legal frame length.
                            self.stage = Stage::Lost;
                        }
                        continue;
                    }
                    let frame_len = *value as usize;
                    if frame_len == 0 || frame_len > MAX_FRAME_LEN {
                        self.stage = Stage::Lost;
                        continue;
                    }
                    self.cursor = if self.needs_head() {
                        Cursor::Head { frame_len, buf: [0; HEAD], have: 0, want: frame_len.min(HEAD) as u8 }
                    } else {
                        Cursor::Skip { remaining: frame_len }
                    };
                }
                Cursor::Head { frame_len, buf, have, want } => {
                    let n = usize::from(*want - *have).min(bytes.len());
                    buf[usize::from(*have)..usize::from(*have) + n].copy_from_slice(&bytes[..n]);
                    *have += n as u8;
                    bytes = &bytes[n..];
                    if *have == *want {
                        let (frame_len, head, want) = (*frame_len, *buf, usize::from(*want));
                        self.inspect(&head[..want]);
                        let remaining = frame_len - want;
                        self.cursor = if remaining == 0 {
                            Cursor::Len { value: 0, bytes: 0 }
                        } else {
                            Cursor::Skip { remaining }
                        };
                    }
                }
            }
        }
    }

    /// Whether packet ids still matter: in every state it follows (a
    /// Disconnect can come at any time).
    fn needs_head(&self) -> bool {
        self.stage != Stage::Lost
    }

    /// Looks at the first bytes of one packet.
    fn inspect(&mut self, head: &[u8]) {
        self.goodbye = false;
        let mut rest = head;
        if self.compression.is_some() {
            let Some(data_len) = take_varint(&mut rest) else {
                self.stage = Stage::Lost;
                return;
            };
            if data_len != 0 {
                // Compressed: the id is inside the zlib stream. The packets
                // that move the stage are a few bytes long, so a compressed
                // one of their size means a threshold this cannot follow.
                let could_matter = match self.stage {
                    Stage::Login => true,
                    Stage::Configuration | Stage::Play => data_len <= 1,
                    Stage::Lost => false,
                };
                if could_matter {
                    self.stage = Stage::Lost;
                }
                return;
            }
        }
        let Some(id) = take_varint(&mut rest) else {
            self.stage = Stage::Lost;
            return;
        };
        let Some(ids) = ids_for(self.protocol) else {
            self.stage = Stage::Lost;
            return;
        };
        self.goodbye = match self.stage {
            Stage::Login => id == 0x00,
            Stage::Configuration => ids.config.is_some_and(|c| c.disconnect == id),
            Stage::Play => id == ids.play_disconnect,
            Stage::Lost => false,
        };
        match self.stage {
            Stage::Login => match id {
                // Encryption Request: online mode, the rest is ciphertext.
                0x01 => self.stage = Stage::Lost,
                0x02 => {
                    self.stage = if self.protocol >= CONFIGURATION_SINCE { Stage::Configuration } else { Stage::Play };
                }
                0x03 if self.protocol >= COMPRESSION_SINCE => match take_varint(&mut rest) {
                    Some(threshold) if threshold >= 0 => self.compression = Some(threshold),
                    Some(_) => self.compression = None,
                    None => self.stage = Stage::Lost,
                },
                _ => {}
            },
            Stage::Configuration => {
                if ids.config.is_some_and(|c| c.finish == id) {
                    self.stage = Stage::Play;
                }
            }
            Stage::Play => {
                if ids.config.is_some_and(|c| c.start_in_play == id) {
                    self.stage = Stage::Configuration;
                }
            }
            Stage::Lost => {}
        }
    }

    /// A Disconnect with `message` for the state the client is in, framed
    /// for the current compression; `None` when none can be sent safely (in
    /// the middle of a frame, encrypted, unknown version).
    pub fn disconnect(&self, message: &str) -> Option<Vec<u8>> {
        if !self.at_boundary() {
            return None;
        }
        let ids = ids_for(self.protocol)?;
        let mut packet = Vec::with_capacity(message.len() + 32);
        match self.stage {
            Stage::Login => {
                put_varint(&mut packet, 0x00);
                put_string(&mut packet, &json_text(message));
            }
            Stage::Configuration => {
                put_varint(&mut packet, ids.config?.disconnect);
                self.put_text(&mut packet, message);
            }
            Stage::Play => {
                put_varint(&mut packet, ids.play_disconnect);
                self.put_text(&mut packet, message);
            }
            Stage::Lost => return None,
        }
        let mut out = Vec::with_capacity(packet.len() + 4);
        if self.compression.is_some() {
            // Data length 0: "not compressed", accepted at any size.
            put_varint(&mut out, packet.len() as i32 + 1);
            put_varint(&mut out, 0);
        } else {
            put_varint(&mut out, packet.len() as i32);
        }
        out.extend_from_slice(&packet);
        Some(out)
    }

    fn put_text(&self, out: &mut Vec<u8>, message: &str) {
        if self.protocol >= NBT_TEXT_SINCE {
            put_nbt_string(out, message);
        } else {
            put_string(out, &json_text(message));
        }
    }
}

fn put_varint(out: &mut Vec<u8>, v: i32) {
    VarInt(v).encode(&mut *out).expect("vec write");
}

fn json_text(message: &str) -> String {
    serde_json::json!({ "text": message }).to_string()
}

/// A text component as network NBT (1.20.3+): a nameless root String tag,
/// which is a plain literal component. Java's "modified UTF-8": NUL as two
/// bytes and characters outside the BMP as two 3-byte surrogates.
fn put_nbt_string(out: &mut Vec<u8>, message: &str) {
    let mut encoded = Vec::with_capacity(message.len());
    for c in message.chars() {
        let mut units = [0u16; 2];
        for &unit in c.encode_utf16(&mut units).iter() {
            match unit {
                0x0001..=0x007f => encoded.push(unit as u8),
                0x0000 | 0x0080..=0x07ff => {
                    encoded.push(0xc0 | (unit >> 6) as u8);
                    encoded.push(0x80 | (unit & 0x3f) as u8);
                }
                _ => {
                    encoded.push(0xe0 | (unit >> 12) as u8);
                    encoded.push(0x80 | ((unit >> 6) & 0x3f) as u8);
                    encoded.push(0x80 | (unit & 0x3f) as u8);
                }
            }
        }
        if encoded.len() > usize::from(u16::MAX) - 3 {
            break;
        }
    }
    encoded.truncate(usize::from(u16::MAX));
    out.push(0x08);
    out.extend_from_slice(&(encoded.len() as u16).to_be_bytes());
    out.extend_from_slice(&encoded);
}

/// Reads a VarInt from the front of `rest`; `None` when it is malformed or
/// cut off. The head holds up to [`HEAD`] bytes, enough for every VarInt the
/// tracker reads, so a cut-off one means a malformed packet.
fn take_varint(rest: &mut &[u8]) -> Option<i32> {
    let mut value: u32 = 0;
    for (i, &b) in rest.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Some(value as i32);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_packet;

    fn frame(tracker: &ClientboundTracker, id: i32, body: &[u8]) -> Vec<u8> {
        let mut packet = Vec::new();
        put_varint(&mut packet, id);
        packet.extend_from_slice(body);
        let mut out = Vec::new();
        if tracker.compression.is_some() {
            put_varint(&mut out, packet.len() as i32 + 1);
            put_varint(&mut out, 0);
        } else {
            put_varint(&mut out, packet.len() as i32);
        }
        out.extend(packet);
        out
    }

    fn varint(v: i32) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        out
    }

    #[test]
    fn login_compression_success_configuration_play() {
        let mut t = ClientboundTracker::new(767);
        assert_eq!(t.stage(), Stage::Login);
        let set = frame(&t, 0x03, &varint(256));
        t.feed(&set);
        assert_eq!(t.compression(), Some(256));
        let success = frame(&t, 0x02, &[7; 20]);
        t.feed(&success);
        assert_eq!(t.stage(), Stage::Configuration);
        // A compressed registry packet: skipped, stage unchanged.
        let mut compressed = varint(40);
        compressed.extend(varint(900));
        compressed.extend([0xAB; 38]);
        t.feed(&compressed);
        assert_eq!(t.stage(), Stage::Configuration);
        let finish = frame(&t, 0x03, &[]);
        t.feed(&finish);
        assert_eq!(t.stage(), Stage::Play);
        // Start Configuration goes back.
        let start = frame(&t, 0x69, &[]);
        t.feed(&start);
        assert_eq!(t.stage(), Stage::Configuration);
    }

    #[test]
    fn a_disconnect_from_the_server_is_its_goodbye() {
        // Refused at login (whitelist, ban, full): Login Disconnect.
        let mut t = ClientboundTracker::new(340);
        assert!(!t.server_said_goodbye());
        let kick = encode_packet(0x00, b"\x10{\"text\":\"full\"}");
        t.feed(&kick[..3]);
        assert!(!t.server_said_goodbye(), "half a packet is no goodbye");
        t.feed(&kick[3..]);
        assert!(t.server_said_goodbye());
        // Kicked in play (1.12.2: 0x1a), with compression on; any packet after it
        // means the stream went on.
        let mut t = ClientboundTracker::new(340);
        t.feed(&encode_packet(0x03, &varint(256)));
        t.feed(&frame(&t, 0x02, b"0123456789abcdef0123456789abcdef\x05Steve"));
        assert_eq!(t.stage(), Stage::Play);
        t.feed(&frame(&t, 0x1a, b"\x06\"bye!\""));
        assert!(t.server_said_goodbye());
        t.feed(&frame(&t, 0x1f, &[0; 8]));
        assert!(!t.server_said_goodbye());
        // 1.7 play ids are followed too (0x40), and in configuration its own id.
        let mut t = ClientboundTracker::new(5);
        t.feed(&encode_packet(0x02, b"\x24abcdefab-cdef-abcd-efab-cdefabcdefab\x05Steve"));
        t.feed(&encode_packet(0x40, b"\x04\"x\""));
        assert!(t.server_said_goodbye());
        let mut t = ClientboundTracker::new(767);
        t.feed(&encode_packet(0x02, &[7; 20]));
        assert_eq!(t.stage(), Stage::Configuration);
        t.feed(&encode_packet(0x02, &[0x08, 0, 1, b'x']));
        assert!(t.server_said_goodbye());
        // Encrypted: nothing can be said about it.
        let mut t = ClientboundTracker::new(340);
        t.feed(&encode_packet(0x01, &[0; 30]));
        t.feed(&encode_packet(0x00, b"\x02{}"));
        assert!(!t.server_said_goodbye());
    }

    #[test]
    fn encryption_request_gives_up() {
        let mut t = ClientboundTracker::new(340);
        t.feed(&encode_packet(0x01, &[0; 30]));
        assert_eq!(t.stage(), Stage::Lost);
        assert_eq!(t.disconnect("bye"), None);
    }

    #[test]
    fn unknown_versions_and_garbage_give_up() {
        assert_eq!(ClientboundTracker::new(3).stage(), Stage::Lost);
        assert_eq!(ClientboundTracker::new(0x4000_0100).stage(), Stage::Lost);
        let mut t = ClientboundTracker::new(340);
        t.feed(&[0xff, 0xff, 0xff, 0x01]);
        assert_eq!(t.stage(), Stage::Lost);
        let mut t = ClientboundTracker::new(340);
        t.feed(&[0x00]);
        assert_eq!(t.stage(), Stage::Lost);
    }

    #[test]
    fn no_disconnect_inside_a_frame() {
        let mut t = ClientboundTracker::new(340);
        let success = encode_packet(0x02, b"0123456789abcdef0123456789abcdef\x05Steve");
        t.feed(&success);
        assert_eq!(t.stage(), Stage::Play);
        let chunk = encode_packet(0x20, &[1; 500]);
        t.feed(&chunk[..100]);
        assert!(!t.at_boundary());
        assert_eq!(t.disconnect("bye"), None);
        t.feed(&chunk[100..]);
        let d = t.disconnect("bye").unwrap();
        let (f, used) = crate::decode_frame(&d, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!((f.id, used), (0x1a, d.len()));
        assert_eq!(f.body[1..], *br#"{"text":"bye"}"#);
    }

    #[test]
    fn play_disconnect_as_nbt_with_compression() {
        let mut t = ClientboundTracker::new(775);
        for (id, body) in [(0x03, varint(64)), (0x02, vec![1; 30])] {
            let f = frame(&t, id, &body);
            t.feed(&f);
        }
        let finish = frame(&t, 0x03, &[]);
        t.feed(&finish);
        assert_eq!(t.stage(), Stage::Play);
        let d = t.disconnect("é\0x").unwrap();
        // len, data length 0, id 0x20, TAG_String, u16 length, modified UTF-8.
        assert_eq!(d, [10, 0, 0x20, 0x08, 0, 5, 0xc3, 0xa9, 0xc0, 0x80, b'x']);
    }

    #[test]
    fn table_matches_known_versions() {
        for (protocol, play) in [
            (5, 0x40),
            (47, 0x40),
            (340, 0x1a),
            (404, 0x1b),
            (754, 0x19),
            (760, 0x19),
            (763, 0x1a),
            (765, 0x1b),
            (769, 0x1d),
            (772, 0x1c),
            (775, 0x20),
        ] {
            assert_eq!(ids_for(protocol).unwrap().play_disconnect, play, "protocol {protocol}");
        }
    }

    proptest::proptest! {
        /// However a stream is cut into chunks, the tracker ends in the same
        /// state as when fed it whole.
        #[test]
        fn chunking_does_not_matter(
            sizes in proptest::collection::vec(0usize..700, 0..12),
            cuts in proptest::collection::vec(1usize..64, 1..40),
            protocol in proptest::sample::select(vec![5, 47, 340, 763, 764, 766, 775]),
        ) {
            let mut whole = ClientboundTracker::new(protocol);
            let mut stream = Vec::new();
            for (i, f) in [(0x03, varint(128)), (0x02, vec![3; 24])].into_iter().chain(sizes.iter().enumerate().map(|(i, &n)| (0x10 + i as i32, vec![i as u8; n]))) {
                let bytes = frame(&whole, i, &f);
                whole.feed(&bytes);
                stream.extend(bytes);
            }
            let mut chunked = ClientboundTracker::new(protocol);
            let mut rest = &stream[..];
            for c in cuts.iter().cycle() {
                if rest.is_empty() { break; }
                let n = (*c).min(rest.len());
                chunked.feed(&rest[..n]);
                rest = &rest[n..];
            }
            proptest::prop_assert_eq!(whole.stage(), chunked.stage());
            proptest::prop_assert_eq!(whole.compression(), chunked.compression());
            proptest::prop_assert!(chunked.at_boundary());
        }
    }
}
