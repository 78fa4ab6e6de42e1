//! The fuzzed data directory: how the `wal_recovery` input describes its
//! files, and reading and writing them.
//!
//! ```text
//! input   = flags u8, damage u8, file*
//! flags   bit 0: recover with skip-corrupt (else strict)
//!         bit 1: repair: write magic, version and checksum into headers,
//!                and checksums into frames (libFuzzer cannot make CRCs)
//!         bit 2: with repair, cut each frame's length to fit the file
//!         bit 3: with repair, renumber frames in order (WAL: from the
//!                file name's number; snapshot: 1, 2, 3, ...)
//! damage  with repair, frame i keeps the checksum it has when bit i % 8 is set
//! file    = tag u8, seq u8, len u16 (LE), content [len] (cut at the input's end)
//! tag     bits 0-1: 0 WAL segment, 1 snapshot, 2 unfinished snapshot (.tmp),
//!                   3 a copy set aside earlier (wal-*.log.corrupt)
//!         bit 7:    the name's number is u64::MAX - seq (else seq)
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use crate::wal::codec::{self, FileKind};
use crate::wal::config::RecoveryMode;

/// File name → content.
pub(super) type Files = BTreeMap<String, Vec<u8>>;

/// A decoded input.
#[derive(Debug)]
pub(super) struct Input {
    pub(super) mode: RecoveryMode,
    pub(super) files: Files,
}

impl Input {
    pub(super) fn parse(data: &[u8]) -> Option<Input> {
        let (&[flags, damage], mut rest) = data.split_first_chunk::<2>()?;
        let mode = if flags & 1 == 1 {
            RecoveryMode::SkipCorrupt
        } else {
            RecoveryMode::Strict
        };
        let mut files = Files::new();
        while let Some((&[tag, seq, lo, hi], tail)) = rest.split_first_chunk::<4>() {
            let len = usize::from(u16::from_le_bytes([lo, hi])).min(tail.len());
            let (content, tail) = tail.split_at(len);
            rest = tail;
            let seq = if tag & 0x80 != 0 {
                u64::MAX - u64::from(seq)
            } else {
                u64::from(seq)
            };
            let mut content = content.to_vec();
            let (name, kind) = match tag & 3 {
                0 => (format!("wal-{seq:020}.log"), Some(FileKind::Wal)),
                1 => (format!("snap-{seq:020}.snap"), Some(FileKind::Snapshot)),
                2 => (format!("snap-{seq:020}.tmp"), None),
                _ => (format!("wal-{seq:020}.log.corrupt"), None),
            };
            if let Some(kind) = kind.filter(|_| flags & 2 != 0) {
                repair(&mut content, kind, seq, flags, damage);
            }
            files.insert(name, content);
        }
        Some(Input { mode, files })
    }
}

/// Makes the header and frames of `content` valid where the flags say so.
fn repair(content: &mut [u8], kind: FileKind, seq: u64, flags: u8, damage: u8) {
    if content.len() < codec::FILE_HEADER_LEN {
        return;
    }
    let renumber = flags & 8 != 0;
    let header_seq = match kind {
        FileKind::Wal if renumber => seq,
        _ => u64_at(content, 16),
    };
    content[..codec::FILE_HEADER_LEN].copy_from_slice(&codec::encode_file_header(kind, header_seq));
    let mut at = codec::FILE_HEADER_LEN;
    let mut index = 0u64;
    while content.len() - at >= codec::FRAME_HEADER_LEN {
        let room = content.len() - at - codec::FRAME_HEADER_LEN;
        let mut len = u32_at(content, at) as usize;
        if flags & 4 != 0 {
            len %= room + 1;
        }
        if len > room {
            break;
        }
        let seq = match kind {
            _ if !renumber => u64_at(content, at + 8),
            FileKind::Wal => header_seq.wrapping_add(index),
            FileKind::Snapshot => index + 1,
        };
        let end = at + codec::FRAME_HEADER_LEN + len;
        let mut frame = Vec::with_capacity(end - at);
        codec::encode_frame(seq, &content[at + codec::FRAME_HEADER_LEN..end], &mut frame);
        if damage & (1 << (index % 8)) != 0 {
            frame[4..8].copy_from_slice(&content[at + 4..at + 8]);
        }
        content[at..end].copy_from_slice(&frame);
        at = end;
        index += 1;
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Empties `dir` (creating it if needed) and writes `files` into it.
pub(super) fn write(dir: &Path, files: &Files) {
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(dir)
    {
        panic!("cannot empty {}: {e}", dir.display());
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    for (name, content) in files {
        if let Err(e) = std::fs::write(dir.join(name), content) {
            panic!("cannot write {name}: {e}");
        }
    }
}

/// The files in `dir`.
pub(super) fn read(dir: &Path) -> Files {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    };
    let mut files = Files::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        match std::fs::read(entry.path()) {
            Ok(content) => files.insert(name, content),
            Err(e) => panic!("cannot read {name}: {e}"),
        };
    }
    files
}
