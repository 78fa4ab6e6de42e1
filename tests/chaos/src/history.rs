//! The recorded history: one [`Op`] per client operation, with its
//! invocation and completion instants (microseconds since the run began) and
//! what the client saw. Pure data; no clock, no I/O.
//!
//! Values are unique per write (`"<client>:<seq>"`), so a read names the
//! write it observed.

/// "Never completed": the completion instant of an operation whose outcome
/// is in doubt (it may take effect at any time after its invocation).
pub const NEVER: u64 = u64::MAX;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// SET key value.
    Set(String),
    /// GET key.
    Get,
    /// DEL key.
    Del,
    /// INCR key (by 1).
    Incr,
    /// SET key value NX.
    SetNx(String),
    /// Compare-and-swap: replace `expected` (the value read with the version
    /// the CAS names; `None` = absent, version 0) by `new`.
    Cas {
        /// The value the client expected (read before, with its version).
        expected: Option<String>,
        /// The value it writes.
        new: String,
    },
}

/// What a successful operation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ret {
    /// A plain acknowledgement (SET, DEL).
    Done,
    /// A read's value (`None` = a miss).
    Value(Option<String>),
    /// Whether a conditional write applied (SET NX, CAS).
    Applied(bool),
    /// A counter's new value (INCR).
    Int(i64),
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answered; the answer.
    Ok(Ret),
    /// Answered with an error. Today an error does not prove the operation
    /// was not applied (issue 14, finding 7), so the checks treat it as in
    /// doubt; it is kept apart only for reporting.
    Failed,
    /// No answer (timeout, connection lost): in doubt.
    Unknown,
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The client that issued it.
    pub client: u32,
    /// Which path it took (e.g. "proxy-a", "sdk-quorum"), for reports.
    pub via: &'static str,
    /// The key.
    pub key: String,
    /// The request.
    pub call: Call,
    /// When it was sent, µs since the run began.
    pub invoke: u64,
    /// When its answer arrived, µs since the run began.
    pub complete: u64,
    /// The answer.
    pub outcome: Outcome,
    /// A final read at `All` after the faults stopped and the cluster healed.
    pub final_read: bool,
}

impl Op {
    /// A test's operation on `key` by client 0 (not a final read).
    #[cfg(test)]
    pub(crate) fn at(key: &str, call: Call, invoke: u64, complete: u64, outcome: Outcome) -> Self {
        Self {
            client: 0,
            via: "test",
            key: key.into(),
            call,
            invoke,
            complete,
            outcome,
            final_read: false,
        }
    }

    /// Whether the client got a definite, successful answer.
    pub fn acked(&self) -> bool {
        matches!(self.outcome, Outcome::Ok(_))
    }

    /// The completion instant if acknowledged, else [`NEVER`]: an operation
    /// in doubt may take effect arbitrarily late.
    pub fn effective_complete(&self) -> u64 {
        if self.acked() { self.complete } else { NEVER }
    }

    /// The value a read returned, if this is a successful read.
    pub fn read_value(&self) -> Option<&Option<String>> {
        match (&self.call, &self.outcome) {
            (Call::Get, Outcome::Ok(Ret::Value(v))) => Some(v),
            _ => None,
        }
    }
}

/// Which keys an operation belongs to: each family has its own checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `r:*`: SET / GET / DEL registers.
    Register,
    /// `c:*`: INCR counters.
    Counter,
    /// `l:*`: SET NX / CAS / DEL / GET locks.
    Lock,
}

impl Family {
    /// The family of a key, from its prefix.
    pub fn of(key: &str) -> Option<Family> {
        match key.split_once(':')?.0 {
            "r" => Some(Family::Register),
            "c" => Some(Family::Counter),
            "l" => Some(Family::Lock),
            _ => None,
        }
    }
}

/// The history split per key, each key's operations in invocation order.
pub fn by_key(ops: &[Op]) -> std::collections::BTreeMap<&str, Vec<&Op>> {
    let mut m: std::collections::BTreeMap<&str, Vec<&Op>> = Default::default();
    for op in ops {
        m.entry(op.key.as_str()).or_default().push(op);
    }
    for v in m.values_mut() {
        v.sort_by_key(|o| (o.invoke, o.complete));
    }
    m
}
