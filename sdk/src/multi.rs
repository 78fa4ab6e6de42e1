//! Multi-key operations: keys are grouped per node and sent as one `Batch`
//! RPC per node, concurrently; the answers are merged back into key order.
//!
//! `mget` at consistency `One` batches by each key's first healthy replica
//! and falls back to single-key reads (with failover) for keys whose batch
//! failed. Stronger reads go key by key through the quorum path, because
//! each key needs its own comparison and repair. `mset` stamps a version per
//! key and counts acknowledgements per key.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use distcache_proto::v1::{self as pb, operation::Op, operation_result::Result as Out};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Consistency;
use crate::error::{Error, Result};
use crate::replica::View;
use crate::types::Entry;

fn op_error(e: pb::OperationError) -> Error {
    Error::from_status(distcache_proto::status::to_status(e))
}

pub(crate) async fn mget(
    inner: &View,
    keys: Vec<Bytes>,
    c: Consistency,
    deadline: Instant,
) -> Result<Vec<Option<Entry>>> {
    let mut out: Vec<Option<Entry>> = vec![None; keys.len()];
    let mut tasks = JoinSet::new();
    if c != Consistency::One {
        for (pos, key) in keys.into_iter().enumerate() {
            let inner = inner.clone();
            tasks.spawn(async move { (pos, inner.read_quorum(&key, c, deadline).await) });
        }
        while let Some(done) = tasks.join_next().await {
            let (pos, r) = done.map_err(|_| Error::Unavailable {
                needed: 1,
                acked: 0,
            })?;
            out[pos] = Entry::from_pb(r?);
        }
        return Ok(out);
    }

    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (pos, key) in keys.iter().enumerate() {
        let replicas = inner.replicas(key);
        if let Some(&first) = inner.targets(&replicas, 1).first() {
            groups.entry(first).or_default().push(pos);
        }
    }
    let keys = Arc::new(keys);
    let mut batches = JoinSet::new();
    for (node, positions) in groups {
        let (inner, keys) = (inner.clone(), keys.clone());
        batches.spawn(async move {
            let ops = positions
                .iter()
                .map(|&p| pb::Operation {
                    op: Some(Op::Get(pb::GetRequest {
                        key: keys[p].clone(),
                    })),
                })
                .collect();
            let res = inner.call_batch(node, ops, deadline).await;
            (positions, res)
        });
    }
    let mut retry_single = Vec::new();
    while let Some(done) = batches.join_next().await {
        let Ok((positions, res)) = done else { continue };
        match res {
            Ok(results) if results.len() == positions.len() => {
                for (p, r) in positions.into_iter().zip(results) {
                    match r.result {
                        Some(Out::Get(g)) => {
                            inner.clock.observe(g.version);
                            out[p] = Entry::from_pb(g);
                        }
                        Some(Out::Error(e)) => return Err(op_error(e)),
                        _ => retry_single.push(p),
                    }
                }
            }
            Ok(_) => retry_single.extend(positions),
            Err(s) if crate::error::is_transient(&s) => retry_single.extend(positions),
            Err(s) => return Err(Error::from_status(s)),
        }
    }
    // Keys whose batch failed: one by one, with failover to other replicas.
    for p in retry_single {
        let key = keys[p].clone();
        let inner = inner.clone();
        tasks.spawn(async move { (p, inner.read_one(&key, deadline).await) });
    }
    while let Some(done) = tasks.join_next().await {
        let Ok((p, r)) = done else { continue };
        out[p] = Entry::from_pb(r?);
    }
    Ok(out)
}

pub(crate) async fn mset(
    inner: &View,
    items: Vec<(Bytes, Bytes)>,
    ttl_ms: u64,
    c: Consistency,
    deadline: Instant,
) -> Result<()> {
    let mut need = Vec::with_capacity(items.len());
    let mut groups: HashMap<usize, Vec<(usize, pb::Operation)>> = HashMap::new();
    for (pos, (key, value)) in items.into_iter().enumerate() {
        let replicas = inner.replicas(&key);
        let n = c.required(replicas.len());
        need.push(n);
        let op = pb::Operation {
            op: Some(Op::Set(pb::SetRequest {
                key: key.clone(),
                value,
                ttl_ms,
                condition: pb::SetCondition::Always as i32,
                version: inner.clock.next(),
                keep_ttl: false,
            })),
        };
        for node in inner.targets(&replicas, n) {
            groups.entry(node).or_default().push((pos, op.clone()));
        }
    }
    let mut batches = JoinSet::new();
    for (node, entries) in groups {
        let inner = inner.clone();
        batches.spawn(async move {
            let (positions, ops): (Vec<usize>, Vec<pb::Operation>) = entries.into_iter().unzip();
            // Every set carries its version, so resending the batch is safe.
            let res = inner
                .retry
                .run(deadline, || async {
                    inner
                        .call_batch(node, ops.clone(), deadline)
                        .await
                        .map_err(Error::from_status)
                })
                .await;
            (positions, res)
        });
    }
    let mut acks = vec![0usize; need.len()];
    while let Some(done) = batches.join_next().await {
        let Ok((positions, res)) = done else { continue };
        match res {
            Ok(results) => {
                for (p, r) in positions.into_iter().zip(results) {
                    match r.result {
                        Some(Out::Set(_)) => acks[p] += 1,
                        Some(Out::Error(e)) => return Err(op_error(e)),
                        _ => {}
                    }
                }
            }
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(e),
        }
    }
    match acks.iter().zip(&need).find(|(a, n)| a < n) {
        None => Ok(()),
        Some((&acked, &needed)) => Err(Error::Unavailable { needed, acked }),
    }
}
