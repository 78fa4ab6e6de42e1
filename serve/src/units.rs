//! Human-friendly sizes (`64MiB`, `1GiB`, `512Mi`, `512k`) and durations
//! (`250ms`, `30s`, `5m`, `2h`, `30d`) for flags and the config file.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// A size in bytes, written as a plain number or with a unit suffix,
/// case-insensitive: `B`; `K`, `KB`, `KiB`, `Ki`; `M`, `MB`, `MiB`, `Mi`;
/// `G`, `GB`, `GiB`, `Gi`; `T`, `TB`, `TiB`, `Ti`. Every one is a power of
/// 1024, so the `512Mi` and `1Gi` of a Kubernetes manifest mean what they
/// mean there. Unlike Redis (which reads `1k` as 1000 and `1kb` as 1024) and
/// Kubernetes (where `1M` is 10^6), `1k` and `1M` here are 1024 and 2^20:
/// a size is never read as less memory than its binary form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A duration written as a number with a unit: `ms`, `s`, `m`, `h`, `d`.
/// A bare number means seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

/// Why a size or duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: expected e.g. {example}")]
pub struct UnitError {
    what: &'static str,
    input: String,
    example: &'static str,
}

fn split(s: &str) -> (&str, &str) {
    let s = s.trim();
    let at = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (&s[..at], s[at..].trim())
}

impl std::str::FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || UnitError {
            what: "size",
            input: s.to_owned(),
            example: "64MiB, 1GiB, 512Mi, 512KiB or 1048576",
        };
        let (num, unit) = split(s);
        let n: u64 = num.parse().map_err(|_| err())?;
        let shift = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" | "ki" => 10,
            "m" | "mb" | "mib" | "mi" => 20,
            "g" | "gb" | "gib" | "gi" => 30,
            "t" | "tb" | "tib" | "ti" => 40,
            _ => return Err(err()),
        };
        n.checked_mul(1 << shift).map(ByteSize).ok_or_else(err)
    }
}

fn duration_error(input: &str) -> UnitError {
    UnitError {
        what: "duration",
        input: input.to_owned(),
        example: "250ms, 30s, 5m, 2h or 30d",
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || duration_error(s);
        let (num, unit) = split(s);
        let n: u64 = num.parse().map_err(|_| err())?;
        let ms_per = match unit {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err()),
        };
        n.checked_mul(ms_per)
            .map(|ms| HumanDuration(Duration::from_millis(ms)))
            .ok_or_else(err)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B", self.0)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

/// Accepts a TOML integer or a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(u64),
    Str(String),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => Ok(ByteSize(n)),
            NumOrStr::Str(s) => s.parse().map_err(de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            // Seconds, bounded like the text form: at most u64::MAX ms.
            NumOrStr::Num(n) => n
                .checked_mul(1000)
                .map(|ms| HumanDuration(Duration::from_millis(ms)))
                .ok_or_else(|| de::Error::custom(duration_error(&n.to_string()))),
            NumOrStr::Str(s) => s.parse().map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let p = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(p("64MiB"), Ok(64 << 20));
        assert_eq!(p("1GiB"), Ok(1 << 30));
        assert_eq!(p("1gb"), Ok(1 << 30));
        assert_eq!(p("512k"), Ok(512 << 10));
        assert_eq!(p("1024"), Ok(1024));
        assert_eq!(p(" 2 MiB "), Ok(2 << 20));
        // Kubernetes quantities, as a manifest's resources.limits writes them.
        assert_eq!(p("512Mi"), Ok(512 << 20));
        assert_eq!(p("1Gi"), Ok(1 << 30));
        assert_eq!(p("64Ki"), Ok(64 << 10));
        assert_eq!(p("2Ti"), Ok(2 << 40));
        for bad in [
            "",
            "MiB",
            "-1",
            "1.5GiB",
            "1XB",
            "99999999999TiB",
            "1Gii",
            "1e9",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        let p = |s: &str| s.parse::<HumanDuration>().map(|d| d.0.as_millis());
        assert_eq!(p("250ms"), Ok(250));
        assert_eq!(p("30s"), Ok(30_000));
        assert_eq!(p("30"), Ok(30_000));
        assert_eq!(p("5m"), Ok(300_000));
        assert_eq!(p("30d"), Ok(30 * 86_400_000));
        for bad in ["", "s", "1.5s", "3w", "-1s"] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    /// Found by the `units` fuzz target (`fuzz/regressions/units/`): a
    /// number of seconds whose milliseconds overflow u64 was accepted as an
    /// integer but refused as text, and printed as text that does not parse.
    #[test]
    fn integer_durations_have_the_bounds_of_text_ones() {
        let json = |s: &str| serde_json::from_str::<HumanDuration>(s).map(|d| d.0);
        assert_eq!(json("30").ok(), Some(Duration::from_secs(30)));
        let max = u64::MAX / 1000;
        assert_eq!(json(&max.to_string()).ok(), Some(Duration::from_secs(max)));
        for s in [(max + 1).to_string(), u64::MAX.to_string()] {
            assert!(json(&s).is_err(), "{s}");
            assert!(s.parse::<HumanDuration>().is_err(), "{s}");
        }
        let d = json(&max.to_string())
            .map(HumanDuration)
            .expect("at the bound");
        assert_eq!(d.to_string().parse::<HumanDuration>(), Ok(d));
    }
}
