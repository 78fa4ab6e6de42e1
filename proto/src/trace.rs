//! W3C trace context (<https://www.w3.org/TR/trace-context/>): the
//! `traceparent` and `tracestate` values that carry a distributed trace from
//! the proxy's front ends through the SDK to the nodes, as gRPC metadata
//! (and, on a `Pipeline` stream, as `PipelineRequest.traceparent`).
//!
//! ```text
//! traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//!              ^^ ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ ^^^^^^^^^^^^^^^^ ^^
//!         version trace-id (16 bytes)              parent-id (8)    flags
//! ```
//!
//! Pure code over strings: a parser that rejects what the specification
//! rejects (bad hex, upper case, all-zero ids, version `ff`, wrong lengths),
//! a formatter that writes version 00, and a fresh span id for each RPC a
//! caller makes under a context. A `tracestate` is checked for shape and
//! passed on as it came; its members are not interpreted.
//!
//! Not here: sampling decisions, span export (the `otel` feature of the
//! node and the proxy), baggage.

use std::fmt;
use std::sync::Arc;

use tonic::metadata::{MetadataMap, MetadataValue};

/// Metadata key of the trace context: version, trace id, parent id, flags.
pub const TRACEPARENT: &str = "traceparent";

/// Metadata key of the vendor-specific trace state that travels with it.
pub const TRACESTATE: &str = "tracestate";

/// The `sampled` bit of [`TraceContext::flags`].
pub const FLAG_SAMPLED: u8 = 0x01;

/// Longest `tracestate` passed on, in bytes (the specification asks
/// propagators to pass on at least 512).
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// Length of a version-00 `traceparent`.
const TRACEPARENT_LEN: usize = 55;

/// A parsed `traceparent` (and the `tracestate` that came with it). Ids
/// parsed are never all zero; one built from fields with an all-zero id is
/// sent as it is, and receivers ignore it. Cloning it is cheap (the state
/// is shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The whole trace's id.
    pub trace_id: [u8; 16],
    /// The id of the caller's span, the parent of the callee's.
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 ([`FLAG_SAMPLED`]) says the caller records.
    pub flags: u8,
    /// The `tracestate` that came with it, if any, as it came.
    pub state: Option<Arc<str>>,
}

/// Why a `traceparent` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceParseError {
    /// Too short, too long for version 00, or a `-` out of place.
    #[error("traceparent has the wrong length or shape")]
    Shape,
    /// A field is not lower-case hexadecimal.
    #[error("traceparent has a field that is not lower-case hex")]
    Hex,
    /// Version `ff`, which the specification forbids.
    #[error("traceparent version ff is invalid")]
    Version,
    /// The trace id or the parent id is all zeros.
    #[error("traceparent has an all-zero id")]
    ZeroId,
}

/// `bytes` as lower-case hex, written without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

fn nibble(c: u8) -> Result<u8, TraceParseError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(TraceParseError::Hex),
    }
}

/// Decodes lower-case hex `s` into `out` (`s` is twice as long).
fn unhex(s: &[u8], out: &mut [u8]) -> Result<(), TraceParseError> {
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(())
}

impl TraceContext {
    /// Parses a `traceparent` value. Version 00 must be exactly 55
    /// characters; a later version may carry more fields after a `-`, which
    /// are ignored (as the specification asks).
    ///
    /// ```
    /// use distcache_proto::trace::TraceContext;
    ///
    /// let t = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// assert!(t.sampled());
    /// assert_eq!(t.trace_id_hex().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// assert!(TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_err());
    /// ```
    pub fn parse(value: &str) -> Result<Self, TraceParseError> {
        let s = value.trim_matches([' ', '\t']).as_bytes();
        if s.len() < TRACEPARENT_LEN {
            return Err(TraceParseError::Shape);
        }
        if s[2] != b'-' || s[35] != b'-' || s[52] != b'-' {
            return Err(TraceParseError::Shape);
        }
        let mut version = [0u8; 1];
        unhex(&s[0..2], &mut version)?;
        match version[0] {
            0xff => return Err(TraceParseError::Version),
            0 if s.len() != TRACEPARENT_LEN => return Err(TraceParseError::Shape),
            v if v > 0 && s.len() > TRACEPARENT_LEN && s[TRACEPARENT_LEN] != b'-' => {
                return Err(TraceParseError::Shape);
            }
            _ => {}
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        let mut flags = [0u8; 1];
        unhex(&s[3..35], &mut trace_id)?;
        unhex(&s[36..52], &mut parent_id)?;
        unhex(&s[53..55], &mut flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return Err(TraceParseError::ZeroId);
        }
        Ok(Self {
            trace_id,
            parent_id,
            flags: flags[0],
            state: None,
        })
    }

    /// The context in `m`'s `traceparent`, with its `tracestate` if that is
    /// well formed; `None` when there is none or it is invalid (a request
    /// with a bad trace context is served as one without).
    pub fn from_metadata(m: &MetadataMap) -> Option<Self> {
        Self::from_values(
            m.get(TRACEPARENT)?.to_str().ok()?,
            m.get(TRACESTATE).and_then(|v| v.to_str().ok()),
        )
    }

    /// The context of a `traceparent` value and an optional `tracestate`
    /// (kept only when well formed); `None` when `traceparent` is invalid.
    pub fn from_values(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let mut ctx = Self::parse(traceparent).ok()?;
        ctx.state = tracestate.filter(|s| is_tracestate(s)).map(Arc::from);
        Some(ctx)
    }

    /// The context a callee sees when the holder of this one calls it from
    /// its span `span_id`: same trace, flags and state, new parent.
    pub fn child(&self, span_id: [u8; 8]) -> Self {
        Self {
            parent_id: span_id,
            ..self.clone()
        }
    }

    /// Writes `traceparent` (and `tracestate`, when there is one) into `m`.
    pub fn insert_into(&self, m: &mut MetadataMap) {
        if let Ok(v) = MetadataValue::try_from(self.to_string()) {
            m.insert(TRACEPARENT, v);
        }
        if let Some(v) = self
            .state
            .as_deref()
            .and_then(|s| MetadataValue::try_from(s).ok())
        {
            m.insert(TRACESTATE, v);
        }
    }

    /// Whether the caller records this trace.
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The trace id as 32 hex digits (for span fields; no allocation).
    pub fn trace_id_hex(&self) -> Hex<'_> {
        Hex(&self.trace_id)
    }

    /// The parent id as 16 hex digits.
    pub fn parent_id_hex(&self) -> Hex<'_> {
        Hex(&self.parent_id)
    }
}

/// The `traceparent` value (version 00) of the context.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.parent_id_hex(),
            self.flags
        )
    }
}

/// Whether `s` has the shape of a `tracestate`: at most
/// [`MAX_TRACESTATE_BYTES`], printable ASCII, at most 32 comma-separated
/// `key=value` members (empty members allowed, as the specification does).
pub fn is_tracestate(s: &str) -> bool {
    s.len() <= MAX_TRACESTATE_BYTES
        && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && s.split(',').count() <= 32
        && s.split(',').map(str::trim).all(|m| {
            m.is_empty()
                || m.split_once('=')
                    .is_some_and(|(k, v)| !k.is_empty() && !v.is_empty() && !v.ends_with(' '))
        })
}

/// A new span id: random, never all zeros. No random-number crate: the
/// standard library's randomly keyed hasher over a process-wide counter.
pub fn new_span_id() -> [u8; 8] {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let id = std::collections::hash_map::RandomState::new().hash_one(n);
    // Zero is invalid; 1 in 2^64, but never send it.
    id.max(1).to_be_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_parses_into_its_fields() {
        let t = TraceContext::parse(EXAMPLE).unwrap();
        assert_eq!(t.trace_id[0], 0x4b);
        assert_eq!(t.trace_id[15], 0x36);
        assert_eq!(
            t.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(t.flags, 1);
        assert!(t.sampled());
        assert_eq!(t.parent_id_hex().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn a_parsed_value_formats_back_to_itself() {
        for v in [
            EXAMPLE,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            "00-ffffffffffffffffffffffffffffffff-0000000000000001-ff",
        ] {
            assert_eq!(TraceContext::parse(v).unwrap().to_string(), v);
        }
    }

    #[test]
    fn malformed_values_are_refused_with_their_reason() {
        use TraceParseError::*;
        let cases = [
            ("", Shape),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                Shape,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                Shape,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                Hex,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                Hex,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
                Hex,
            ),
            (
                "0z-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Hex,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Version,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ZeroId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ZeroId,
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                Shape,
            ),
        ];
        for (v, why) in cases {
            assert_eq!(TraceContext::parse(v), Err(why), "{v:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_for_the_fields_it_shares_with_00() {
        let t = TraceContext::parse(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next",
        )
        .unwrap();
        assert_eq!(t.to_string(), EXAMPLE);
    }

    #[test]
    fn a_child_keeps_the_trace_and_takes_the_new_parent() {
        let t = TraceContext::parse(EXAMPLE).unwrap();
        let id = new_span_id();
        assert_ne!(id, [0; 8]);
        assert_ne!(id, new_span_id());
        let c = t.child(id);
        assert_eq!(
            (c.trace_id, c.flags, c.parent_id),
            (t.trace_id, t.flags, id)
        );
    }

    #[test]
    fn metadata_round_trip_keeps_a_valid_tracestate_and_drops_a_bad_one() {
        let mut m = MetadataMap::new();
        let mut t = TraceContext::parse(EXAMPLE).unwrap();
        t.state = Some(Arc::from("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
        t.insert_into(&mut m);
        assert_eq!(TraceContext::from_metadata(&m), Some(t));

        m.insert(TRACESTATE, MetadataValue::from_static("no-equals-sign"));
        assert_eq!(TraceContext::from_metadata(&m).unwrap().state, None);
        m.insert(TRACEPARENT, MetadataValue::from_static("00-junk"));
        assert_eq!(TraceContext::from_metadata(&m), None);
        assert_eq!(TraceContext::from_metadata(&MetadataMap::new()), None);
    }

    #[test]
    fn tracestate_shape_follows_the_specification() {
        assert!(is_tracestate("a=1"));
        assert!(is_tracestate("a=1, b=2 ,,c=3"));
        assert!(!is_tracestate("a"));
        assert!(!is_tracestate("=1"));
        assert!(!is_tracestate("a=1\n"));
        assert!(!is_tracestate(&"a=1,".repeat(33)));
        assert!(!is_tracestate(&format!(
            "a={}",
            "x".repeat(MAX_TRACESTATE_BYTES)
        )));
    }
}
