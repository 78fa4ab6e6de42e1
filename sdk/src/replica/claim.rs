//! Copy claims: how clients carrying out the same move (several proxies)
//! copy each old owner's moved keys once, not once each.
//!
//! Before it scans an old owner, a client claims that scan on the old
//! owner itself with a node-stamped `SET key "copying …" PX lease NX`, the
//! key naming the move and the source:
//!
//! ```text
//! claim taken ─► copy (the lease renewed while it runs) ─► SET key "done START"
//! claim held  ─► wait: "done START" ─► skip this source, if START is after
//!                                     this client saw the change
//!                      lease ran out (its client died) ─► claim it again
//! any error, or a scan that started before this client saw the change
//!             ─► copy it yourself (copies are versioned: safe twice)
//! ```
//!
//! START is when the claimant's scan began (Unix ms). Until a client sees
//! the change it writes to the old owners only, so a scan that began
//! before that (less a second for clock differences) may have passed keys
//! it wrote afterwards: such a client copies for itself.
//!
//! The move's name covers the ring left, the new ring, the replica count
//! and the old owners the pass takes as healthy: two clients skip each
//! other's scans only when they would have scanned the same ranges of the
//! same nodes.
//!
//! The claim keys live in the old owner's keyspace, with a TTL, under
//! [`CLAIM_PREFIX`].

use std::time::Duration;

use distcache_proto::v1::{self as pb, operation::Op, operation_result::Result as Out};

use super::view::View;
use crate::topology::Move;

/// Keys of copy claims start with this.
pub(crate) const CLAIM_PREFIX: &str = "__distcache:move:";
/// How long a claim holds without renewal.
const LEASE: Duration = Duration::from_secs(10);
/// How often a waiting client looks at a claim held by another.
const WAIT_POLL: Duration = Duration::from_millis(200);
/// How long "done" stays.
const DONE_TTL: Duration = Duration::from_secs(600);
/// Clock difference allowed between two clients' "when".
const CLOCK_MARGIN_MS: u64 = 1_000;

/// What a claim attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// This client copies the source.
    Mine,
    /// Another client copied it, with a scan that began after this
    /// client saw the change.
    Done,
    /// Another client is copying it, with such a scan.
    Busy,
}

/// The claim key of the scan of node `src` in the pass of `m` that takes
/// `healthy` (node names) for its healthy old owners.
pub(super) fn claim_key(
    m: &Move,
    new: &crate::ring::Ring,
    n: usize,
    healthy: &[&str],
    src: &str,
) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut feed = |names: &mut Vec<&str>| {
        names.sort_unstable();
        for s in names.iter() {
            h.update(s.as_bytes());
            h.update(&[0]);
        }
        h.update(&[1]);
    };
    feed(&mut m.base().ring.nodes().iter().map(String::as_str).collect());
    feed(&mut new.nodes().iter().map(String::as_str).collect());
    feed(&mut healthy.to_vec());
    h.update(&(n as u64).to_le_bytes());
    format!("{CLAIM_PREFIX}{:016x}:{src}", h.digest())
}

impl View {
    /// One node-stamped write or read of a claim key on node `at`.
    async fn claim_op(&self, at: usize, op: Op) -> Result<Out, tonic::Status> {
        let node = &self.topo.nodes[at];
        let mut r = node
            .conn
            .batch(
                vec![pb::Operation { op: Some(op) }],
                self.config.timeout,
                crate::trace::current().as_deref(),
            )
            .await?;
        match r.pop().and_then(|r| r.result) {
            Some(Out::Error(e)) => Err(distcache_proto::status::to_status(e)),
            Some(out) => Ok(out),
            None => Err(tonic::Status::internal("empty batch answer")),
        }
    }

    fn set_claim(key: &str, value: String, ttl: Duration, condition: pb::SetCondition) -> Op {
        Op::Set(pb::SetRequest {
            key: key.to_owned().into(),
            value: value.into(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1),
            condition: condition as i32,
            version: 0,
            keep_ttl: false,
        })
    }

    /// Tries to claim the scan `key` names on node `at`, for a scan that
    /// starts now; `seen_ms` is when this client saw the change.
    pub(super) async fn claim(&self, at: usize, key: &str, seen_ms: u64) -> Claim {
        let take = Self::set_claim(
            key,
            self.copying(crate::node::now_ms()),
            LEASE,
            pb::SetCondition::IfAbsent,
        );
        match self.claim_op(at, take).await {
            Ok(Out::Set(s)) if s.applied => return Claim::Mine,
            Ok(Out::Set(_)) => {}
            // Cannot tell: copy it ourselves.
            _ => return Claim::Mine,
        }
        let look = Op::Get(pb::GetRequest {
            key: key.to_owned().into(),
            ..Default::default()
        });
        match self.claim_op(at, look).await {
            Ok(Out::Get(g)) if g.found => match parse(&g.value) {
                Some((_, started)) if started < seen_ms.saturating_add(CLOCK_MARGIN_MS) => {
                    Claim::Mine
                }
                Some((true, _)) => Claim::Done,
                Some((false, _)) => Claim::Busy,
                None => Claim::Mine,
            },
            // Gone meanwhile (the lease ran out): try again at once.
            Ok(Out::Get(_)) => Claim::Busy,
            _ => Claim::Mine,
        }
    }

    /// The value of this client's claim for a scan that began at `started`.
    fn copying(&self, started: u64) -> String {
        format!("copying {started} {:016x}", self.client_id)
    }

    /// Waits for the claim `key` on node `at` that another client holds:
    /// `Done` once it copied, `Mine` if its lease ran out (or the node
    /// cannot tell), `None` when a newer change replaced the move.
    pub(super) async fn wait_claim(&self, at: usize, key: &str, seen_ms: u64) -> Option<Claim> {
        loop {
            match self.claim(at, key, seen_ms).await {
                Claim::Busy => {}
                c => return Some(c),
            }
            if self.members.superseded(&self.topo) {
                return None;
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// Renews this client's claim `key` on node `at` while `copy` runs,
    /// then marks it done (for one grace) if the copy succeeded.
    pub(super) async fn holding_claim<T, E>(
        &self,
        at: usize,
        key: &str,
        copy: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = crate::node::now_ms();
        tokio::pin!(copy);
        let out = loop {
            tokio::select! {
                out = &mut copy => break out,
                () = tokio::time::sleep(LEASE / 3) => {
                    let op = Self::set_claim(key, self.copying(started), LEASE, pb::SetCondition::Always);
                    let _ = self.claim_op(at, op).await;
                }
            }
        };
        let op = if out.is_ok() {
            Self::set_claim(
                key,
                format!("done {started}"),
                DONE_TTL,
                pb::SetCondition::Always,
            )
        } else {
            // Let another client (or this one's next pass) take it now.
            Op::Delete(pb::DeleteRequest {
                key: key.to_owned().into(),
                version: 0,
                return_value: false,
            })
        };
        let _ = self.claim_op(at, op).await;
        out
    }
}

/// A claim value: (done, when its scan began).
fn parse(value: &[u8]) -> Option<(bool, u64)> {
    let s = std::str::from_utf8(value).ok()?;
    let mut words = s.split(' ');
    let done = match words.next()? {
        "done" => true,
        "copying" => false,
        _ => return None,
    };
    Some((done, words.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_values_parse() {
        assert_eq!(
            parse(b"done 1700000000000"),
            Some((true, 1_700_000_000_000))
        );
        assert_eq!(parse(b"copying 5 00000000000000ff"), Some((false, 5)));
        for bad in [&b"done"[..], b"copying by x", b"", b"other 5", b"\xff"] {
            assert_eq!(parse(bad), None);
        }
    }
}
