//! Input limits, always on: non-empty keys up to `max_key_bytes`, values up to
//! `max_value_bytes`, TTLs up to `max_ttl`, and replicated versions at most
//! `max_version_skew` ahead of this node's clock (one far-future version,
//! from a clock bug or a hostile `user` token, would otherwise make a key
//! unwritable by every honest writer). Checked per operation (batch
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
    /// How far ahead of this node's clock a replicated write's version may
    /// be (versions carry Unix milliseconds in their upper 48 bits).
    pub max_version_skew: HumanDuration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_key_bytes: ByteSize(1 << 10),
            max_value_bytes: ByteSize(1 << 20),
            max_ttl: HumanDuration(Duration::from_secs(30 * 86_400)),
            max_version_skew: HumanDuration(DEFAULT_MAX_VERSION_SKEW),
        }
    }
}

/// Default [`LimitsConfig::max_version_skew`]: 30 s.
pub(crate) const DEFAULT_MAX_VERSION_SKEW: Duration = Duration::from_secs(30);

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
    /// A replicated version further ahead of this node's clock than
    /// `--max-version-skew`.
    #[error(
        "version {version} is {ahead_ms} ms ahead of this node's clock, more than \
         max-version-skew ({max_ms} ms): check the writer's clock"
    )]
    VersionAhead {
        /// The version sent.
        version: u64,
        /// How far ahead of the node's clock it is.
        ahead_ms: u64,
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
    max_skew_ms: u64,
}

impl From<LimitsConfig> for Limits {
    fn from(c: LimitsConfig) -> Self {
        Self {
            max_key: c.max_key_bytes.0,
            max_value: c.max_value_bytes.0,
            max_ttl_ms: u64::try_from(c.max_ttl.0.as_millis()).unwrap_or(u64::MAX),
            max_skew_ms: u64::try_from(c.max_version_skew.0.as_millis()).unwrap_or(u64::MAX),
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

    /// Checks a replicated write's `version` (0: the node assigns one)
    /// against this node's clock reading `now_ms`.
    pub(crate) fn version(&self, version: u64, now_ms: u64) -> Result<(), LimitError> {
        let at_ms = version >> distcache_proto::VERSION_LOGICAL_BITS;
        let ahead_ms = at_ms.saturating_sub(now_ms);
        if version != 0 && ahead_ms > self.max_skew_ms {
            return Err(LimitError::VersionAhead {
                version,
                ahead_ms,
                max_ms: self.max_skew_ms,
            });
        }
        Ok(())
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

    #[test]
    fn versions_far_ahead_of_the_clock_are_refused() {
        let l = Limits::from(LimitsConfig::default());
        let now = 1_700_000_000_000;
        let at = |ms: u64| distcache_proto::version_floor(ms) | 0xFFFF;
        assert!(l.version(0, now).is_ok(), "0: the node assigns it");
        assert!(l.version(at(now - 60_000), now).is_ok(), "the past is fine");
        assert!(
            l.version(at(now + 30_000), now).is_ok(),
            "30 s ahead is within"
        );
        let e = l.version(at(now + 30_001), now).expect_err("too far");
        assert!(e.to_string().contains("max-version-skew"), "{e}");
        assert!(l.version(u64::MAX, now).is_err());
    }
}
