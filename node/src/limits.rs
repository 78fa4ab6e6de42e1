//! Input limits, always on: non-empty keys up to `max_key_bytes`, values up to
//! `max_value_bytes`, TTLs up to `max_ttl`. Checked per operation (batch
//! operations included) before the store is touched; a violation names the
//! limit so the caller knows which flag to change.

use std::time::Duration;

use distcache_serve::units::{ByteSize, HumanDuration};
use serde::Deserialize;

/// `[limits]`: requests beyond these get `INVALID_ARGUMENT` naming the limit.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest key in bytes (keys must also be non-empty).
    pub max_key_bytes: ByteSize,
    /// Largest value in bytes.
    pub max_value_bytes: ByteSize,
    /// Longest TTL.
    pub max_ttl: HumanDuration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_key_bytes: ByteSize(1 << 10),
            max_value_bytes: ByteSize(1 << 20),
            max_ttl: HumanDuration(Duration::from_secs(30 * 86_400)),
        }
    }
}

/// An input that breaks a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitError {
    /// The key is empty.
    #[error("key must not be empty")]
    EmptyKey,
    /// The key is longer than `--max-key-bytes`.
    #[error("key of {len} bytes exceeds max-key-bytes ({max})")]
    KeyTooLong {
        /// Bytes in the key.
        len: usize,
        /// The limit.
        max: u64,
    },
    /// The value is longer than `--max-value-bytes`.
    #[error("value of {len} bytes exceeds max-value-bytes ({max})")]
    ValueTooLong {
        /// Bytes in the value.
        len: usize,
        /// The limit.
        max: u64,
    },
    /// The TTL is longer than `--max-ttl`.
    #[error("ttl of {ttl_ms} ms exceeds max-ttl ({max_ms} ms)")]
    TtlTooLong {
        /// The TTL asked for.
        ttl_ms: u64,
        /// The limit.
        max_ms: u64,
    },
}

/// The limits in force, in the units requests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    max_key: u64,
    max_value: u64,
    max_ttl_ms: u64,
}

impl From<LimitsConfig> for Limits {
    fn from(c: LimitsConfig) -> Self {
        Self {
            max_key: c.max_key_bytes.0,
            max_value: c.max_value_bytes.0,
            max_ttl_ms: u64::try_from(c.max_ttl.0.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl Limits {
    /// Checks a key.
    pub(crate) fn key(&self, key: &[u8]) -> Result<(), LimitError> {
        if key.is_empty() {
            return Err(LimitError::EmptyKey);
        }
        if key.len() as u64 > self.max_key {
            return Err(LimitError::KeyTooLong {
                len: key.len(),
                max: self.max_key,
            });
        }
        Ok(())
    }

    /// Checks a key, a value and a TTL in milliseconds.
    pub(crate) fn write(&self, key: &[u8], value: &[u8], ttl_ms: u64) -> Result<(), LimitError> {
        self.key(key)?;
        if value.len() as u64 > self.max_value {
            return Err(LimitError::ValueTooLong {
                len: value.len(),
                max: self.max_value,
            });
        }
        self.ttl(ttl_ms)
    }

    /// Checks a TTL in milliseconds.
    pub(crate) fn ttl(&self, ttl_ms: u64) -> Result<(), LimitError> {
        if ttl_ms > self.max_ttl_ms {
            return Err(LimitError::TtlTooLong {
                ttl_ms,
                max_ms: self.max_ttl_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_themselves() {
        let l = Limits::from(LimitsConfig::default());
        assert!(l.write(b"k", &[0; 1 << 20], 30 * 86_400_000).is_ok());
        assert_eq!(l.key(b""), Err(LimitError::EmptyKey));
        let e = l.key(&[b'k'; 1025]).expect_err("too long");
        assert!(e.to_string().contains("max-key-bytes"), "{e}");
        let e = l.write(b"k", &[0; (1 << 20) + 1], 0).expect_err("too long");
        assert!(e.to_string().contains("max-value-bytes"), "{e}");
        let e = l.ttl(30 * 86_400_000 + 1).expect_err("too long");
        assert!(e.to_string().contains("max-ttl"), "{e}");
    }
}
