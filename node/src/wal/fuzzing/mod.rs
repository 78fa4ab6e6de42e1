//! The bodies of the WAL's fuzz targets (`fuzz/`), here so that the normal
//! test suite can replay their corpora on stable Rust. Not an API.
//!
//! - [`wal_record`]: the codec alone (file headers, frames, bodies).
//! - [`wal_recovery`]: start-up recovery of a whole data directory made of
//!   fuzzed segments and snapshots.
//!
//! Each panics when an oracle is violated; that is how libFuzzer sees it.

mod dir;
mod recovery;

pub use recovery::wal_recovery;

use super::codec::{self, FileKind, Frame};

/// The `wal_record` target: `data` as a file (both headers, then every
/// frame found at any offset), and `data` as a record body framed with a
/// valid checksum. Oracles: a valid frame or body re-encodes to exactly
/// its bytes; a framed body decodes back, and every prefix of the frame is
/// `Incomplete`.
pub fn wal_record(data: &[u8]) {
    for kind in [FileKind::Wal, FileKind::Snapshot] {
        if let Some(Ok(seq)) = codec::decode_file_header(data, kind) {
            // The reserved fields (bytes 12..16 and 28..32) are not read;
            // the format version is any the codec reads, and written anew
            // as the current one.
            let again = codec::encode_file_header(kind, seq);
            assert_eq!((&again[..8], &again[16..24]), (&data[..8], &data[16..24]));
            let mut v = [0u8; 4];
            v.copy_from_slice(&data[8..12]);
            let v = u32::from_le_bytes(v);
            assert!((codec::OLDEST_FORMAT_VERSION..=codec::FORMAT_VERSION).contains(&v));
        }
    }
    let mut at = 0;
    while at < data.len() {
        match codec::decode_frame(&data[at..]) {
            Frame::Valid { seq, body, len } => {
                let mut again = Vec::new();
                codec::encode_frame(seq, body, &mut again);
                assert_eq!(again, data[at..at + len], "frame at {at}");
                check_body(body);
                at += len;
            }
            Frame::Incomplete | Frame::Corrupt(_) => at += 1,
        }
    }
    check_body(data);
    let seq = u64::from(data.first().copied().unwrap_or(0)).wrapping_sub(1);
    let mut framed = Vec::new();
    codec::encode_frame(seq, data, &mut framed);
    assert_eq!(
        codec::decode_frame(&framed),
        Frame::Valid {
            seq,
            body: data,
            len: framed.len()
        }
    );
    for cut in [0, 1, codec::FRAME_HEADER_LEN, framed.len() - 1] {
        if let Some(prefix) = framed.get(..cut.min(framed.len() - 1)) {
            assert_eq!(codec::decode_frame(prefix), Frame::Incomplete, "cut {cut}");
        }
    }
}

/// A body that decodes re-encodes to itself, at the length `body_len` says.
fn check_body(body: &[u8]) {
    if let Ok(rec) = codec::decode_body(body) {
        let mut again = Vec::new();
        codec::encode_body(&rec, &mut again);
        assert_eq!(again, body, "{rec:?}");
        assert_eq!(codec::body_len(&rec), body.len());
    }
}
