//! Multi-key operations: keys are grouped per node and sent as one `Batch`
//! RPC per node, concurrently; the answers are merged back into key order.
//!
//! Both are bounded: a key asked for twice is fetched once; a node gets at
//! most 1,024 keys (and, for `mset`, about 1 MiB) per message; reads a node
//! did not run because its answer was full are sent again; and an `mget`
//! answer larger than `ClientConfig::max_answer_bytes` fails with
//! `Error::ResourceExhausted` instead of growing without bound.
//!
//! `mget` at consistency `One` batches by each key's first healthy replica
//! and falls back to single-key reads (with failover) for keys whose batch
//! failed. Stronger reads go key by key through the quorum path, because
//! each key needs its own comparison and repair. `mset` stamps a version per
//! key and counts acknowledgements per key.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use distcache_proto::budget::is_answer_full;
use distcache_proto::v1::{self as pb, operation::Op, operation_result::Result as Out};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Consistency;
use crate::error::{Error, Exhausted, Result};
use crate::replica::View;
use crate::types::Entry;

fn op_error(e: pb::OperationError) -> Error {
    Error::from_status(distcache_proto::status::to_status(e))
}

/// Keys a multi-key request sends to one node in one message (well under
/// the node's `MAX_OPERATIONS`; a node budgets the answer on top of that).
const CHUNK_KEYS: usize = 1024;

/// Key and value bytes an `mset` sends to one node in one message: the
/// most that goes on the node's shared `Pipeline` stream, far under a
/// node's message limit (16 MiB by default, never under about
/// `--max-value-bytes`).
const CHUNK_BYTES: usize = crate::conn::PIPE_MAX_BATCH_BYTES;

/// The distinct keys of `keys`, and for each position of `keys` the index of
/// its key among them.
fn distinct(keys: Vec<Bytes>) -> (Vec<Bytes>, Vec<usize>) {
    let mut index: HashMap<Bytes, usize> = HashMap::with_capacity(keys.len());
    let mut unique = Vec::new();
    let slots = keys
        .into_iter()
        .map(|k| {
            *index.entry(k).or_insert_with_key(|k| {
                unique.push(k.clone());
                unique.len() - 1
            })
        })
        .collect();
    (unique, slots)
}

/// The bytes an `mget` answer may hold (`ClientConfig::max_answer_bytes`),
/// charged as values arrive (a key asked for twice counts twice).
#[derive(Debug)]
struct AnswerBound {
    limit: usize,
    used: AtomicUsize,
    /// How many times each distinct key was asked for.
    copies: Vec<usize>,
}

impl AnswerBound {
    fn charge(&self, key: usize, e: &Option<Entry>) -> Result<()> {
        let len = e.as_ref().map_or(0, |e| e.value.len()) * self.copies[key];
        let used = self.used.fetch_add(len, Ordering::Relaxed) + len;
        if used > self.limit {
            return Err(Error::ResourceExhausted {
                kind: Exhausted::Answer,
                message: format!("the answer exceeds max_answer_bytes ({} bytes)", self.limit),
            });
        }
        Ok(())
    }
}

pub(crate) async fn mget(
    inner: &View,
    keys: Vec<Bytes>,
    c: Consistency,
    deadline: Instant,
) -> Result<Vec<Option<Entry>>> {
    let (unique, slots) = distinct(keys);
    let mut copies = vec![0usize; unique.len()];
    for &u in &slots {
        copies[u] += 1;
    }
    let bound = Arc::new(AnswerBound {
        limit: inner.config.max_answer_bytes,
        used: AtomicUsize::new(0),
        copies,
    });
    let mut found: Vec<Option<Entry>> = vec![None; unique.len()];
    let mut tasks = JoinSet::new();
    if c != Consistency::One {
        for (u, key) in unique.into_iter().enumerate() {
            let inner = inner.clone();
            tasks.spawn(crate::trace::carry(async move {
                (u, inner.read_quorum(&key, c, deadline).await)
            }));
        }
        while let Some(done) = tasks.join_next().await {
            let (u, r) = done.map_err(|_| Error::Unavailable {
                needed: 1,
                acked: 0,
            })?;
            found[u] = Entry::from_pb(r?);
            bound.charge(u, &found[u])?;
        }
        return Ok(slots.into_iter().map(|u| found[u].clone()).collect());
    }

    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut retry_single = Vec::new();
    for (u, key) in unique.iter().enumerate() {
        let replicas = inner.deciders(key);
        match inner.readable(&replicas).first() {
            Some(&first) => groups.entry(first).or_default().push(u),
            // No readable replica: one by one, where it fails cleanly.
            None => retry_single.push(u),
        }
    }
    let unique = Arc::new(unique);
    let mut batches = JoinSet::new();
    for (node, todo) in groups {
        let (inner, unique, bound) = (inner.clone(), unique.clone(), bound.clone());
        batches.spawn(crate::trace::carry(async move {
            mget_node(&inner, node, todo, &unique, &bound, deadline).await
        }));
    }
    while let Some(done) = batches.join_next().await {
        let Ok(res) = done else { continue };
        let (got, failed) = res?;
        for (u, e) in got {
            found[u] = e;
        }
        retry_single.extend(failed);
    }
    // Keys whose batch failed: one by one, with failover to other replicas.
    for u in retry_single {
        let key = unique[u].clone();
        let inner = inner.clone();
        tasks.spawn(crate::trace::carry(async move {
            (u, inner.read_one(&key, deadline).await)
        }));
    }
    while let Some(done) = tasks.join_next().await {
        let Ok((u, r)) = done else { continue };
        found[u] = Entry::from_pb(r?);
        bound.charge(u, &found[u])?;
    }
    Ok(slots.into_iter().map(|u| found[u].clone()).collect())
}

/// What one node's share of an `mget` gave: entries by distinct-key index,
/// and the keys to read again one by one (their batch failed in transit).
type NodeShare = (Vec<(usize, Option<Entry>)>, Vec<usize>);

/// Reads the distinct keys `todo` (indexes into `unique`) from `node`, in
/// messages of at most [`CHUNK_KEYS`]; reads the node did not run because
/// its answer was full go out again in the next message.
async fn mget_node(
    inner: &View,
    node: usize,
    mut todo: Vec<usize>,
    unique: &[Bytes],
    bound: &AnswerBound,
    deadline: Instant,
) -> Result<NodeShare> {
    let mut got = Vec::with_capacity(todo.len());
    let mut failed = Vec::new();
    while !todo.is_empty() {
        let rest = todo.split_off(todo.len().min(CHUNK_KEYS));
        let chunk = std::mem::replace(&mut todo, rest);
        let ops = chunk
            .iter()
            .map(|&u| pb::Operation {
                op: Some(Op::Get(pb::GetRequest {
                    key: unique[u].clone(),
                    ..Default::default()
                })),
            })
            .collect();
        match inner.call_batch(node, ops, deadline).await {
            Ok(results) if results.len() == chunk.len() => {
                let mut again = Vec::new();
                for (u, r) in chunk.into_iter().zip(results) {
                    if is_answer_full(&r) {
                        again.push(u);
                        continue;
                    }
                    match r.result {
                        Some(Out::Get(g)) => {
                            inner.clock.observe(g.version);
                            let e = Entry::from_pb(g);
                            bound.charge(u, &e)?;
                            got.push((u, e));
                        }
                        // Fenced since the batch was planned: elsewhere.
                        Some(Out::Error(e)) if e.fenced => {
                            inner.topo.nodes[node].mark_fenced();
                            failed.push(u);
                        }
                        Some(Out::Error(e)) => return Err(op_error(e)),
                        _ => failed.push(u),
                    }
                }
                again.append(&mut todo);
                todo = again;
            }
            Ok(_) => failed.extend(chunk),
            Err(s) if crate::error::is_transient(&s) => {
                failed.extend(chunk);
                failed.append(&mut todo);
            }
            Err(s) => return Err(Error::from_status(s)),
        }
    }
    Ok((got, failed))
}

pub(crate) async fn mset(
    inner: &View,
    items: Vec<(Bytes, Bytes)>,
    ttl_ms: u64,
    c: Consistency,
    deadline: Instant,
) -> Result<()> {
    let mut need = Vec::with_capacity(items.len());
    let mut first = Vec::with_capacity(items.len());
    // Each item's set, kept to be stamped again if a replica holds a newer
    // version of its key.
    let mut sets = Vec::with_capacity(items.len());
    let mut groups: HashMap<usize, Vec<(usize, pb::Operation)>> = HashMap::new();
    for (pos, (key, value)) in items.into_iter().enumerate() {
        let replicas = inner.replicas(&key);
        let n = c.required(replicas.len());
        let replicas = inner.write_set_of(&key, replicas);
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
        let targets = inner.targets(&replicas, n);
        first.push(targets.first().copied());
        for node in targets {
            groups.entry(node).or_default().push((pos, op.clone()));
        }
        sets.push(op);
    }
    let mut batches = JoinSet::new();
    for (node, entries) in groups
        .into_iter()
        .flat_map(|(node, e)| chunks(e).into_iter().map(move |c| (node, c)))
    {
        let inner = inner.clone();
        batches.spawn(crate::trace::carry(async move {
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
            (node, positions, res)
        }));
    }
    let mut acks = vec![0usize; need.len()];
    let mut superseded = vec![0usize; need.len()];
    // Whether each key's first target (see `superseded` in `write.rs`)
    // answered that it holds the write.
    let mut first_holds = vec![false; need.len()];
    while let Some(done) = batches.join_next().await {
        let Ok((node, positions, res)) = done else {
            continue;
        };
        match res {
            Ok(results) => {
                for (p, r) in positions.into_iter().zip(results) {
                    match r.result {
                        // Only a replica that holds the write counts.
                        Some(Out::Set(s)) if s.applied => {
                            acks[p] += 1;
                            first_holds[p] |= first[p] == Some(node);
                        }
                        Some(Out::Set(_)) => superseded[p] += 1,
                        Some(Out::Error(e)) => return Err(op_error(e)),
                        _ => {}
                    }
                }
            }
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(e),
        }
    }
    // Keys a replica held a newer version of: superseded there by a later
    // write when another replica holds this one (see `superseded` in
    // `write.rs`), else written again one by one, stamped past that version.
    for (p, set) in sets.into_iter().enumerate() {
        if first_holds[p] {
            acks[p] += superseded[p];
        }
        if superseded[p] == 0 || acks[p] >= need[p] {
            continue;
        }
        if let Some(Op::Set(r)) = set.op {
            let key = r.key.clone();
            inner.write(&key, Op::Set(r), c, deadline).await?;
            acks[p] = need[p];
        }
    }
    match acks.iter().zip(&need).find(|(a, n)| a < n) {
        None => Ok(()),
        Some((&acked, &needed)) => Err(Error::Unavailable { needed, acked }),
    }
}

/// Splits one node's share of an `mset` into messages of at most
/// [`CHUNK_KEYS`] operations and about [`CHUNK_BYTES`] of keys and values
/// (a message over the node's limit would fail whole).
fn chunks(entries: Vec<(usize, pb::Operation)>) -> Vec<Vec<(usize, pb::Operation)>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for (pos, op) in entries {
        let len = op.op.as_ref().map_or(0, crate::conn::op_bytes);
        if !current.is_empty() && (current.len() >= CHUNK_KEYS || bytes + len > CHUNK_BYTES) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += len;
        current.push((pos, op));
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(len: usize) -> pb::Operation {
        pb::Operation {
            op: Some(Op::Set(pb::SetRequest {
                key: Bytes::from_static(b"k"),
                value: Bytes::from(vec![0; len]),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn keys_asked_for_twice_are_fetched_once() {
        let keys = ["a", "b", "a", "c", "b", "a"].map(Bytes::from).to_vec();
        let (unique, slots) = distinct(keys);
        assert_eq!(unique, ["a", "b", "c"].map(Bytes::from).to_vec());
        assert_eq!(slots, vec![0, 1, 0, 2, 1, 0]);
    }

    #[test]
    fn mset_messages_stay_under_the_byte_and_count_bounds_and_keep_every_item() {
        let entries: Vec<_> = (0..40).map(|i| (i, set(300 << 10))).collect();
        let c = chunks(entries);
        let bytes = |m: &Vec<(usize, pb::Operation)>| {
            m.iter()
                .filter_map(|(_, o)| o.op.as_ref())
                .map(crate::conn::op_bytes)
                .sum::<usize>()
        };
        assert!(c.iter().all(|m| bytes(m) <= CHUNK_BYTES));
        assert_eq!(c.iter().map(Vec::len).sum::<usize>(), 40);
        let small: Vec<_> = (0..3000).map(|i| (i, set(1))).collect();
        let c = chunks(small);
        assert_eq!(c.len(), 3);
        assert!(c.iter().all(|m| m.len() <= CHUNK_KEYS));
        // A value larger than a chunk still goes, alone.
        assert_eq!(chunks(vec![(0, set(CHUNK_BYTES * 2))]).len(), 1);
    }

    #[test]
    fn the_answer_bound_counts_every_copy_of_a_key() {
        let b = AnswerBound {
            limit: 10,
            used: AtomicUsize::new(0),
            copies: vec![3, 1],
        };
        let e = |n: usize| {
            Some(Entry {
                value: Bytes::from(vec![0; n]),
                version: 1,
                ttl: None,
            })
        };
        assert!(b.charge(1, &e(4)).is_ok());
        assert!(b.charge(1, &None).is_ok());
        assert!(b.charge(0, &e(2)).is_ok());
        assert!(matches!(
            b.charge(0, &e(1)),
            Err(Error::ResourceExhausted { .. })
        ));
    }
}
