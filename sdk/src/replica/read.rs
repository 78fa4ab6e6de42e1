//! Reads go only to readable replicas (healthy, not fenced: see
//! `catchup.rs`). At `One` from the first of them with failover; at
//! `Quorum` and `All` from enough replicas at once, returning the newest
//! state (a newer tombstone wins over an older value) once the stale
//! replicas among them were repaired with versioned writes. During a move, until
//! its copy is done, a key is read from its owners in the ring the move
//! started from (see `rebalance.rs`): a new owner may not hold it yet.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use distcache_proto::v1::{self as pb, operation::Op, operation_result::Result as Out};
use tokio::time::Instant;

use super::fanout::gather;
use super::view::{Acks, View, mismatched};
use crate::config::Consistency;
use crate::error::{Error, Result, is_transient};

impl View {
    /// Reads from the first healthy replica, failing over to the next ones,
    /// with retries across rounds.
    pub(crate) async fn read_one(&self, key: &Bytes, deadline: Instant) -> Result<pb::GetResponse> {
        self.read_one_tracked(key, deadline, false)
            .await
            .map(|(r, _, _)| r)
    }

    /// [`View::read_one`]; with `track`, the read asks the node that
    /// answers to track the key for this client's near-cache subscription
    /// on it, and the answer comes with that node and the subscription id
    /// (0: it had none, the answer is not to be cached).
    pub(crate) async fn read_one_tracked(
        &self,
        key: &Bytes,
        deadline: Instant,
        track: bool,
    ) -> Result<(pb::GetResponse, usize, u64)> {
        let replicas = self.deciders(key);
        self.retry
            .run(deadline, || async {
                let ready = self.await_readable(&replicas, 1, &[], deadline).await;
                for (n, idx) in ready.into_iter().enumerate() {
                    if n > 0 {
                        self.stats.failovers.fetch_add(1, Ordering::Relaxed);
                    }
                    let tracking_id = if track {
                        self.topo.nodes[idx].tracking()
                    } else {
                        0
                    };
                    let op = Op::Get(pb::GetRequest {
                        key: key.clone(),
                        tracking_id,
                    });
                    let mut tracking_id = tracking_id;
                    let mut answer = self.call(idx, op, deadline).await;
                    if tracking_id != 0
                        && matches!(&answer, Err(s) if s.code() == tonic::Code::FailedPrecondition)
                    {
                        // The subscription just ended (the node restarted,
                        // or its stream broke): read untracked, not cached.
                        let op = Op::Get(pb::GetRequest {
                            key: key.clone(),
                            tracking_id: 0,
                        });
                        answer = self.call(idx, op, deadline).await;
                        tracking_id = 0;
                    }
                    match answer {
                        Ok(Out::Get(r)) => {
                            self.clock.observe(r.version);
                            return Ok((r, idx, tracking_id));
                        }
                        Ok(_) => return Err(mismatched()),
                        Err(s) if is_transient(&s) => continue,
                        Err(s) => return Err(Error::from_status(s)),
                    }
                }
                Err(Error::Unavailable {
                    needed: 1,
                    acked: 0,
                })
            })
            .await
    }

    /// Asks enough replicas, repairs the stale ones among them, and returns
    /// the newest state (a value, or nothing when the newest state is a
    /// tombstone).
    pub(crate) async fn read_quorum(
        &self,
        key: &Bytes,
        consistency: Consistency,
        deadline: Instant,
    ) -> Result<pb::GetResponse> {
        let replicas = self.deciders(key);
        let need = consistency.required(replicas.len());
        self.retry
            .run(deadline, || async {
                let targets = self.await_readable(&replicas, need, &[], deadline).await;
                if targets.len() < need {
                    return Err(Error::Unavailable {
                        needed: need,
                        acked: targets.len(),
                    });
                }
                let op = Op::Get(pb::GetRequest {
                    key: key.clone(),
                    ..Default::default()
                });
                // Scoped: an answer still out is dropped before resolving.
                let answers = {
                    let fan = std::pin::pin!(self.fan_out(&targets, &op, deadline, false, true));
                    gather(fan, targets.len(), need, &[]).await?
                };
                self.newest_and_repair(key, answers, deadline).await
            })
            .await
    }

    /// The newest state among `answers`, once the stale replicas among
    /// them were repaired.
    async fn newest_and_repair(
        &self,
        key: &Bytes,
        answers: Acks,
        deadline: Instant,
    ) -> Result<pb::GetResponse> {
        let mut gets = Vec::with_capacity(answers.len());
        for (idx, out) in answers {
            match out {
                Out::Get(r) => gets.push((idx, r)),
                _ => return Err(mismatched()),
            }
        }
        let Some(newest) = gets
            .iter()
            .filter(|(_, r)| r.found)
            .max_by_key(|(_, r)| r.version)
            .map(|(_, r)| r.clone())
        else {
            return Ok(pb::GetResponse::default());
        };
        self.clock.observe(newest.version);
        // Each replica's stored version: a miss may be a tombstone newer
        // than the value another replica still holds. The node reports it
        // with the miss, read under the same lock: a later probe could see a
        // write made since, and take that write's version for a delete's.
        let held: Vec<(usize, u64)> = gets
            .iter()
            .map(|(idx, r)| (*idx, held_version(r)))
            .collect();
        let tombstone = gets
            .iter()
            .filter(|(_, r)| !r.found)
            .map(|(_, r)| r.tombstone_version)
            .max()
            .unwrap_or(0);
        let (result, repair_to, repair) = if tombstone > newest.version {
            let op = Op::Delete(pb::DeleteRequest {
                key: key.clone(),
                version: tombstone,
                return_value: false,
            });
            (pb::GetResponse::default(), tombstone, op)
        } else {
            let op = Op::Set(pb::SetRequest {
                key: key.clone(),
                value: newest.value.clone(),
                ttl_ms: newest.ttl_ms,
                condition: pb::SetCondition::Always as i32,
                version: newest.version,
                keep_ttl: false,
            });
            (newest, 0, op)
        };
        let target_version = if repair_to > 0 {
            repair_to
        } else {
            result.version
        };
        let stale: Vec<usize> = held
            .iter()
            .filter(|(_, v)| *v < target_version)
            .map(|(i, _)| *i)
            .collect();
        if !stale.is_empty() {
            self.stats
                .read_repairs
                .fetch_add(stale.len() as u64, Ordering::Relaxed);
            tracing::debug!(replicas = stale.len(), "read repair");
            // Repairs are versioned, so they never overwrite anything newer.
            // Awaited (as Cassandra's blocking read repair): the read
            // returns once the replicas it asked hold what it returns, so
            // what follows it sees it too. A write still on its way to the
            // first replica (the one that decides conditional operations)
            // may already be on another, and a read answering it must not
            // be followed by a SET NX or CAS on the first replica's older
            // state (a lock read free and then found taken, with nothing
            // in between). A repair that fails leaves that replica to
            // catch-up; the read still answers.
            let fan = std::pin::pin!(self.fan_out(&stale, &repair, deadline, true, true));
            let _ = gather(fan, stale.len(), stale.len(), &[]).await;
        }
        Ok(result)
    }
}

/// The version a replica holds for the key: its value's, or on a miss its
/// tombstone's (0 when it holds nothing).
fn held_version(r: &pb::GetResponse) -> u64 {
    if r.found {
        r.version
    } else {
        r.tombstone_version
    }
}
