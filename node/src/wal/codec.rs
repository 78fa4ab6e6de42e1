//! The on-disk format of WAL segments and snapshots: a pure, synchronous codec
//! over byte slices. It knows nothing of files, threads or tokio; the writer,
//! the snapshotter and recovery frame and parse bytes through it.
//!
//! Every file starts with a 32-byte header; then come frames, each one record.
//! All integers are little-endian.
//!
//! ```text
//! file header (32 bytes)
//!   magic    [u8; 8]   "DCACHWAL" (WAL segment) or "DCACHSNP" (snapshot)
//!   format   u32       FORMAT_VERSION
//!   reserved u32       0
//!   seq      u64       WAL: sequence number of the segment's first record;
//!                      snapshot: last WAL sequence number it covers
//!   crc      u32       CRC32C of the 24 bytes above
//!   reserved u32       0
//! frame (16 + len bytes)
//!   len      u32       length of the body
//!   crc      u32       CRC32C of len, seq and body (the frame without this field)
//!   seq      u64       WAL: record sequence number; snapshot: 1, 2, 3, ...
//!   body     [u8; len]
//! body
//!   kind     u8        1 put, 2 tombstone, 3 end of snapshot, 4 forget
//!   put / tombstone:   version u64, expires_at u64 (Unix ms, 0 = none),
//!                      key_len u32, key, and for a put: value_len u32, value
//!   end:               count u64 (entries in the snapshot)
//!   forget (WAL only): below_version u64, count u32, then count ranges of
//!                      start u64, end u64 (ring hashes, `start < h <= end`,
//!                      wrapping): remove what those ranges hold below the
//!                      version, at this point of the replay
//! ```
//!
//! Format 2 added the forget record; format 1 files (no forget records)
//! are read as before. A node of an earlier release refuses format 2
//! files by their version instead of taking a forget for corruption.

/// Format version written in every file header.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version still read.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Size of a file header in bytes.
pub const FILE_HEADER_LEN: usize = 32;
/// Size of a frame's fixed part (len, crc, seq) in bytes.
pub const FRAME_HEADER_LEN: usize = 16;
/// Largest body accepted; a longer length field is taken as corruption.
pub const MAX_BODY_LEN: usize = 256 << 20;
/// Largest sequence number a record or snapshot may carry; a larger one is
/// taken as corruption. A node logging a million records a second would
/// take 290,000 years to reach it, and the half of the range above it is
/// what lets recovery and the writer count on without overflowing.
pub const MAX_SEQ: u64 = (1 << 63) - 1;

const KIND_PUT: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
const KIND_END: u8 = 3;
const KIND_FORGET: u8 = 4;
/// Bytes of one range of a forget record.
const RANGE_LEN: usize = 16;

/// Which kind of file a header belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A WAL segment.
    Wal,
    /// A snapshot.
    Snapshot,
}

impl FileKind {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            FileKind::Wal => b"DCACHWAL",
            FileKind::Snapshot => b"DCACHSNP",
        }
    }
}

/// One logged fact about one key, or the end marker of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// The key holds `value` at `version` until `expires_at` (Unix ms, 0 = none).
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// The entry's version.
        version: u64,
        /// Absolute expiry in Unix ms; 0 when none.
        expires_at: u64,
    },
    /// The key was deleted at `version`; the tombstone lasts until `expires_at`
    /// (0: no tombstone is kept).
    Tombstone {
        /// The key.
        key: &'a [u8],
        /// The delete's version.
        version: u64,
        /// When the tombstone may be forgotten, Unix ms.
        expires_at: u64,
    },
    /// Every entry whose key's ring hash lies in one of `ranges` and whose
    /// version is below `below_version` was removed (a membership change
    /// moved those ranges to other nodes). Only in WAL segments.
    Forget {
        /// The bound: entries at or above it stay.
        below_version: u64,
        /// The ranges, encoded: `start u64, end u64` each (see
        /// [`forget_ranges`]).
        ranges: &'a [u8],
    },
    /// Last record of a complete snapshot.
    End {
        /// Entries written before it.
        count: u64,
    },
}

/// Why bytes are not a valid header, frame or body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The file does not start with the expected magic number.
    #[error("bad magic number (not a distcache {0:?} file)")]
    BadMagic(FileKind),
    /// The file was written by an unknown format version.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u32),
    /// The header's checksum does not match.
    #[error("file header checksum mismatch")]
    HeaderChecksum,
    /// The frame's checksum does not match.
    #[error("record checksum mismatch")]
    Checksum,
    /// The length field is beyond [`MAX_BODY_LEN`].
    #[error("record length {0} is implausible")]
    BadLength(u64),
    /// The body is malformed (unknown kind, lengths that do not add up).
    #[error("malformed record body")]
    BadBody,
}

/// What [`decode_frame`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole, verified frame of `len` bytes in total.
    Valid {
        /// The record's sequence number.
        seq: u64,
        /// The record body (decode it with [`decode_body`]).
        body: &'a [u8],
        /// Bytes the frame takes, header included.
        len: usize,
    },
    /// The buffer ends inside the frame: a torn write, or read more.
    Incomplete,
    /// The bytes cannot be a frame.
    Corrupt(CodecError),
}

/// Encodes a file header.
pub fn encode_file_header(kind: FileKind, seq: u64) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[0..8].copy_from_slice(kind.magic());
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decodes a file header of the given kind and returns its `seq` field.
/// `None` when the buffer is shorter than a header.
pub fn decode_file_header(buf: &[u8], kind: FileKind) -> Option<Result<u64, CodecError>> {
    let h = buf.get(..FILE_HEADER_LEN)?;
    Some(check_header(h, kind))
}

fn check_header(h: &[u8], kind: FileKind) -> Result<u64, CodecError> {
    if &h[0..8] != kind.magic() {
        return Err(CodecError::BadMagic(kind));
    }
    let version = u32_at(h, 8);
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(CodecError::UnsupportedVersion(version));
    }
    if crc32c::crc32c(&h[0..24]) != u32_at(h, 24) {
        return Err(CodecError::HeaderChecksum);
    }
    Ok(u64_at(h, 16))
}

/// Appends the body of `rec` to `out`.
pub fn encode_body(rec: &Record<'_>, out: &mut Vec<u8>) {
    match *rec {
        Record::Put {
            key,
            value,
            version,
            expires_at,
        } => {
            out.reserve(1 + 8 + 8 + 4 + key.len() + 4 + value.len());
            out.push(KIND_PUT);
            out.extend_from_slice(&version.to_le_bytes());
            out.extend_from_slice(&expires_at.to_le_bytes());
            put_bytes(out, key);
            put_bytes(out, value);
        }
        Record::Tombstone {
            key,
            version,
            expires_at,
        } => {
            out.reserve(1 + 8 + 8 + 4 + key.len());
            out.push(KIND_TOMBSTONE);
            out.extend_from_slice(&version.to_le_bytes());
            out.extend_from_slice(&expires_at.to_le_bytes());
            put_bytes(out, key);
        }
        Record::Forget {
            below_version,
            ranges,
        } => {
            out.reserve(1 + 8 + 4 + ranges.len());
            out.push(KIND_FORGET);
            out.extend_from_slice(&below_version.to_le_bytes());
            out.extend_from_slice(&((ranges.len() / RANGE_LEN) as u32).to_le_bytes());
            out.extend_from_slice(&ranges[..ranges.len() / RANGE_LEN * RANGE_LEN]);
        }
        Record::End { count } => {
            out.push(KIND_END);
            out.extend_from_slice(&count.to_le_bytes());
        }
    }
}

/// Encodes `(start, end)` ring ranges for [`Record::Forget`].
pub fn encode_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (start, end) in ranges {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
    }
    out
}

/// The `(start, end)` ranges of a [`Record::Forget`].
pub fn forget_ranges(ranges: &[u8]) -> impl Iterator<Item = (u64, u64)> + '_ {
    ranges
        .chunks_exact(RANGE_LEN)
        .map(|c| (u64_at(c, 0), u64_at(c, 8)))
}

/// The number of bytes [`encode_body`] writes for `rec`.
pub fn body_len(rec: &Record<'_>) -> usize {
    match rec {
        Record::Put { key, value, .. } => 1 + 8 + 8 + 4 + key.len() + 4 + value.len(),
        Record::Tombstone { key, .. } => 1 + 8 + 8 + 4 + key.len(),
        Record::Forget { ranges, .. } => 1 + 8 + 4 + ranges.len() / RANGE_LEN * RANGE_LEN,
        Record::End { .. } => 1 + 8,
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Keys and values are bounded far below 4 GiB by the node's limits; a
    // longer slice would be cut by the cast and then fail its checksum-verified
    // length check on decode rather than corrupt anything silently.
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Appends a frame holding `body` with sequence number `seq` to `out`.
pub fn encode_frame(seq: u64, body: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(FRAME_HEADER_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(body);
    let crc = frame_crc(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// CRC32C over a frame's bytes except its own crc field.
fn frame_crc(frame: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&frame[0..4]), &frame[8..])
}

/// Parses the frame at the start of `buf`.
pub fn decode_frame(buf: &[u8]) -> Frame<'_> {
    let Some(head) = buf.get(..FRAME_HEADER_LEN) else {
        return Frame::Incomplete;
    };
    let len = u32_at(head, 0) as usize;
    if len > MAX_BODY_LEN {
        return Frame::Corrupt(CodecError::BadLength(len as u64));
    }
    let total = FRAME_HEADER_LEN + len;
    let Some(frame) = buf.get(..total) else {
        return Frame::Incomplete;
    };
    if frame_crc(frame) != u32_at(head, 4) {
        return Frame::Corrupt(CodecError::Checksum);
    }
    Frame::Valid {
        seq: u64_at(head, 8),
        body: &frame[FRAME_HEADER_LEN..],
        len: total,
    }
}

/// The sequence number a frame header claims, without verifying anything.
/// Used to resynchronise after corruption.
pub fn peek_seq(buf: &[u8]) -> Option<u64> {
    buf.get(..FRAME_HEADER_LEN).map(|h| u64_at(h, 8))
}

/// Decodes a record body.
pub fn decode_body(body: &[u8]) -> Result<Record<'_>, CodecError> {
    let mut r = Reader(body);
    let rec = match r.u8()? {
        KIND_PUT => {
            let version = r.u64()?;
            let expires_at = r.u64()?;
            let key = r.bytes()?;
            let value = r.bytes()?;
            Record::Put {
                key,
                value,
                version,
                expires_at,
            }
        }
        KIND_TOMBSTONE => {
            let version = r.u64()?;
            let expires_at = r.u64()?;
            let key = r.bytes()?;
            Record::Tombstone {
                key,
                version,
                expires_at,
            }
        }
        KIND_END => Record::End { count: r.u64()? },
        KIND_FORGET => {
            let below_version = r.u64()?;
            let count = r.u32()? as usize;
            let len = count.checked_mul(RANGE_LEN).ok_or(CodecError::BadBody)?;
            let ranges = r.take(len)?;
            Record::Forget {
                below_version,
                ranges,
            }
        }
        _ => return Err(CodecError::BadBody),
    };
    if !r.0.is_empty() {
        return Err(CodecError::BadBody);
    }
    Ok(rec)
}

/// A cursor over a body; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::BadBody);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64_at(self.take(8)?, 0))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32_at(self.take(4)?, 0))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = u32_at(self.take(4)?, 0) as usize;
        self.take(n)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn record() -> impl Strategy<Value = (u8, Vec<u8>, Vec<u8>, u64, u64)> {
        (
            0u8..4,
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..256),
            any::<u64>(),
            any::<u64>(),
        )
    }

    fn build<'a>(kind: u8, key: &'a [u8], value: &'a [u8], v: u64, e: u64) -> Record<'a> {
        match kind {
            0 => Record::Put {
                key,
                value,
                version: v,
                expires_at: e,
            },
            1 => Record::Tombstone {
                key,
                version: v,
                expires_at: e,
            },
            2 => Record::End { count: v },
            // Sixteen bytes a range: a forget of the whole ranges in `key`.
            _ => Record::Forget {
                below_version: v,
                ranges: &key[..key.len() / 16 * 16],
            },
        }
    }

    proptest! {
        #[test]
        fn frames_round_trip(recs in proptest::collection::vec(record(), 1..20), seq0 in any::<u64>()) {
            let mut buf = encode_file_header(FileKind::Wal, seq0).to_vec();
            let mut body = Vec::new();
            for (i, (k, key, value, v, e)) in recs.iter().enumerate() {
                body.clear();
                let rec = build(*k, key, value, *v, *e);
                encode_body(&rec, &mut body);
                prop_assert_eq!(body.len(), body_len(&rec));
                encode_frame(seq0.wrapping_add(i as u64), &body, &mut buf);
            }
            prop_assert_eq!(decode_file_header(&buf, FileKind::Wal), Some(Ok(seq0)));
            let mut at = FILE_HEADER_LEN;
            for (i, (k, key, value, v, e)) in recs.iter().enumerate() {
                match decode_frame(&buf[at..]) {
                    Frame::Valid { seq, body, len } => {
                        prop_assert_eq!(seq, seq0.wrapping_add(i as u64));
                        prop_assert_eq!(decode_body(body), Ok(build(*k, key, value, *v, *e)));
                        at += len;
                    }
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            prop_assert_eq!(at, buf.len());
            prop_assert_eq!(decode_frame(&buf[at..]), Frame::Incomplete);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_file_header(&bytes, FileKind::Wal);
            let _ = decode_file_header(&bytes, FileKind::Snapshot);
            let _ = decode_body(&bytes);
            let _ = peek_seq(&bytes);
            let mut at = 0;
            while at < bytes.len() {
                if let Frame::Valid { body, len, .. } = decode_frame(&bytes[at..]) {
                    let _ = decode_body(body);
                    at += len;
                } else {
                    at += 1;
                }
            }
        }

        #[test]
        fn any_flipped_bit_is_detected(key in proptest::collection::vec(any::<u8>(), 1..32),
                                       value in proptest::collection::vec(any::<u8>(), 0..64),
                                       bit in any::<prop::sample::Index>()) {
            let mut body = Vec::new();
            encode_body(&Record::Put { key: &key, value: &value, version: 7, expires_at: 0 }, &mut body);
            let mut buf = Vec::new();
            encode_frame(42, &body, &mut buf);
            let i = bit.index(buf.len() * 8);
            buf[i / 8] ^= 1 << (i % 8);
            let valid = matches!(decode_frame(&buf), Frame::Valid { .. });
            prop_assert!(!valid, "flipped bit {} not detected", i);
        }
    }

    #[test]
    fn header_rejects_wrong_kind_version_and_damage() {
        let h = encode_file_header(FileKind::Snapshot, 9);
        assert_eq!(decode_file_header(&h, FileKind::Snapshot), Some(Ok(9)));
        assert_eq!(
            decode_file_header(&h, FileKind::Wal),
            Some(Err(CodecError::BadMagic(FileKind::Wal)))
        );
        let mut v3 = h;
        v3[8] = 3;
        assert_eq!(
            decode_file_header(&v3, FileKind::Snapshot),
            Some(Err(CodecError::UnsupportedVersion(3)))
        );
        // A format 1 file (written before forget records) is still read.
        let mut v1 = h;
        v1[8] = 1;
        let crc = crc32c::crc32c(&v1[0..24]);
        v1[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_file_header(&v1, FileKind::Snapshot), Some(Ok(9)));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(
            decode_file_header(&bad, FileKind::Snapshot),
            Some(Err(CodecError::HeaderChecksum))
        );
        assert_eq!(decode_file_header(&h[..31], FileKind::Snapshot), None);
    }

    #[test]
    fn huge_length_is_corrupt_not_incomplete() {
        let mut buf = vec![0xff; FRAME_HEADER_LEN];
        buf[3] = 0x7f;
        assert!(matches!(
            decode_frame(&buf),
            Frame::Corrupt(CodecError::BadLength(_))
        ));
    }
}
