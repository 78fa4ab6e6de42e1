//! Fan-out: one operation sent to several replicas at once, the first
//! target's attempt polled inline by the caller and the others in tasks
//! that outlive it (so a write still reaches every replica after the caller
//! returned), and [`gather`], which returns after W answers.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use distcache_proto::v1::{operation::Op, operation_result::Result as Out};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::view::{Acks, Nodes, View};
use crate::error::{Error, Result};

impl View {
    /// Sends `op` to each of `targets`. With `inline_first`, the first
    /// target's attempt is run by whoever awaits the [`Fan`] (no task, the
    /// common case of one replica costs no spawn); every other target gets
    /// its own task, which outlives the caller, so writes still reach every
    /// replica after the caller returned on W acknowledgements. Only pass
    /// `inline_first` when the caller waits for the first target's answer.
    pub(crate) fn fan_out(
        &self,
        targets: &[usize],
        op: &Op,
        deadline: Instant,
        retry: bool,
        inline_first: bool,
    ) -> Fan<impl Future<Output = FirstTry> + Send + '_> {
        let first_idx = if inline_first {
            targets.first().copied()
        } else {
            None
        };
        let spawned = &targets[usize::from(first_idx.is_some())..];
        // Not boxed: the first target's first attempt lives inside the
        // caller's future, so the common single-replica write allocates
        // nothing here. Once started, the attempt is in the node's coalescer
        // queue and is sent even if the caller gives up; retries after a
        // failure run in a task of their own for the same reason.
        let first = first_idx.map(|idx| {
            let op = op.clone();
            async move {
                match self.first_attempt(idx, op, deadline, retry).await {
                    Ok(r) => FirstTry::Done((idx, r)),
                    Err(op) => FirstTry::Retrying(self.retry_task(idx, op, deadline)),
                }
            }
        });
        // A task's result waits in the task itself until the caller polls its
        // handle; a dropped handle detaches the task, which still finishes.
        // Each task makes its first attempt itself and boxes the retry loop
        // (large, and rarely needed): a small task is a cheap allocation.
        let tasks = spawned
            .iter()
            .map(|&idx| {
                let (view, op) = (self.clone(), op.clone());
                tokio::spawn(crate::trace::carry(async move {
                    let r = match view.first_attempt(idx, op, deadline, retry).await {
                        Ok(r) => r,
                        Err(op) => Box::pin(view.replica_call(idx, op, deadline, true)).await,
                    };
                    (idx, r)
                }))
            })
            .collect();
        Fan { first, tasks }
    }
}

/// What the first target's inline attempt gave: its answer, or, after a
/// failure worth retrying, the task that goes on retrying it.
pub(crate) enum FirstTry {
    Done((usize, Result<Out>)),
    Retrying(JoinHandle<(usize, Result<Out>)>),
}

pin_project_lite::pin_project! {
    /// A fan-out in progress (see [`View::fan_out`]): the first target's
    /// attempt, polled by the caller itself, and the other targets' tasks.
    /// Pinned by the caller and [`gather`]ed through the pin, so the first
    /// attempt's future is stored once, in the caller's own future.
    pub(crate) struct Fan<F> {
        #[pin]
        first: Option<F>,
        tasks: Vec<JoinHandle<(usize, Result<Out>)>>,
    }
}

/// A replica task that panicked (or was cancelled) counts as a failed replica.
pub(super) fn task_failed(_: tokio::task::JoinError) -> Result<Out> {
    Err(Error::Unavailable {
        needed: 1,
        acked: 0,
    })
}

/// The next answer of a fan-out, from the inline call or any task; `None`
/// when all have answered.
async fn next_answer<F: Future<Output = FirstTry>>(
    fan: &mut Pin<&mut Fan<F>>,
) -> Option<(usize, Result<Out>)> {
    if fan.first.is_none() && fan.tasks.is_empty() {
        return None;
    }
    std::future::poll_fn(|cx| {
        let this = fan.as_mut().project();
        let (mut first, tasks) = (this.first, this.tasks);
        if let Some(f) = first.as_mut().as_pin_mut()
            && let Poll::Ready(r) = f.poll(cx)
        {
            first.set(None);
            match r {
                FirstTry::Done(r) => return Poll::Ready(Some(r)),
                // Polled with the other tasks just below.
                FirstTry::Retrying(task) => tasks.push(task),
            }
        }
        for i in 0..tasks.len() {
            if let Poll::Ready(r) = Pin::new(&mut tasks[i]).poll(cx) {
                tasks.swap_remove(i);
                return Poll::Ready(Some(r.unwrap_or_else(|e| (usize::MAX, task_failed(e)))));
            }
        }
        Poll::Pending
    })
    .await
}

/// Collects fan-out results until `need` succeeded and every node of
/// `wait_for` answered, or until so many failed that `need` cannot be
/// reached. A permanent error (bad input) is returned at once.
pub(crate) async fn gather<F: Future<Output = FirstTry>>(
    mut fan: Pin<&mut Fan<F>>,
    total: usize,
    need: usize,
    wait_for: &[usize],
) -> Result<Acks> {
    let mut oks = Acks::with_capacity(need);
    let mut failed = 0;
    let mut waiting: Nodes = wait_for.iter().copied().collect();
    while (oks.len() < need || !waiting.is_empty()) && total - failed >= need {
        let next = next_answer(&mut fan).await;
        if let Some((idx, _)) = &next {
            waiting.retain(|w| w != idx);
        }
        match next {
            Some((idx, Ok(out))) => oks.push((idx, out)),
            Some((_, Err(e))) if e.is_retryable() => failed += 1,
            Some((_, Err(e))) => return Err(e),
            None => break,
        }
    }
    if oks.len() >= need {
        Ok(oks)
    } else {
        Err(Error::Unavailable {
            needed: need,
            acked: oks.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use distcache_proto::v1 as pb;

    use super::*;

    fn hit() -> Result<Out> {
        Ok(Out::Get(pb::GetResponse::default()))
    }

    /// A fan-out over tasks that answer `answers` (node index, result, delay
    /// in ms), with no inline first attempt unless `first` is given.
    fn fan(
        first: Option<(usize, Result<Out>)>,
        answers: Vec<(usize, Result<Out>, u64)>,
    ) -> Fan<std::future::Ready<FirstTry>> {
        let tasks = answers
            .into_iter()
            .map(|(idx, r, ms)| {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    (idx, r)
                })
            })
            .collect();
        Fan {
            first: first.map(|r| std::future::ready(FirstTry::Done(r))),
            tasks,
        }
    }

    fn forever() -> u64 {
        24 * 3600 * 1000
    }

    #[tokio::test(start_paused = true)]
    async fn gather_returns_once_need_answers_arrived_without_waiting_for_the_rest() {
        let f = std::pin::pin!(fan(
            None,
            vec![(0, hit(), 1), (1, hit(), 2), (2, hit(), forever())]
        ));
        let acks = gather(f, 3, 2, &[]).await.expect("two of three");
        let mut idx: Vec<usize> = acks.iter().map(|(i, _)| *i).collect();
        idx.sort_unstable();
        assert_eq!(idx, [0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn gather_gives_up_as_soon_as_need_cannot_be_reached() {
        let timeout = || Err(Error::Timeout(Duration::from_millis(1)));
        let f = std::pin::pin!(fan(
            None,
            vec![(0, timeout(), 1), (1, timeout(), 2), (2, hit(), forever())]
        ));
        match gather(f, 3, 2, &[]).await {
            Err(Error::Unavailable { needed, acked }) => assert_eq!((needed, acked), (2, 0)),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_is_returned_at_once() {
        let bad = Err(Error::InvalidArgument("key too long".into()));
        let f = std::pin::pin!(fan(None, vec![(0, bad, 1), (1, hit(), forever())]));
        assert!(matches!(
            gather(f, 2, 1, &[]).await,
            Err(Error::InvalidArgument(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn gather_waits_for_the_replica_it_was_told_to_wait_for() {
        let f = std::pin::pin!(fan(None, vec![(0, hit(), 50), (1, hit(), 1)]));
        let acks = gather(f, 2, 1, &[0]).await.expect("both");
        assert_eq!(
            acks.len(),
            2,
            "need was met by node 1, but node 0 was awaited"
        );
        assert_eq!(acks.last().map(|(i, _)| *i), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_inline_first_attempt_counts_like_any_other_answer() {
        let f = std::pin::pin!(fan(Some((0, hit())), vec![(1, hit(), forever())]));
        let acks = gather(f, 2, 1, &[]).await.expect("the inline answer");
        assert_eq!(acks.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0]);
    }
}
