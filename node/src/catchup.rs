//! The node's side of a returning replica's catch-up: `Scan` (a page of
//! what this node holds, filtered by version, for a peer that is catching
//! up) and `Fence` (raise or lift this node's own fence). The SDK drives
//! both (see `sdk/src/replica/catchup.rs`); the contract is in the proto.

use std::time::Duration;

use distcache_proto::ring::{MAX_SCAN_RANGES, Ranges};
use distcache_proto::v1 as pb;

use crate::fence::Lift;
use crate::state::Shared;

/// Entries per `Scan` answer when the request names no bound.
const DEFAULT_SCAN_ENTRIES: usize = 1_000;
/// Most entries per `Scan` answer (the batch bound, so a page can be
/// written to the returning node in one batch).
const MAX_SCAN_ENTRIES: usize = distcache_proto::budget::MAX_OPERATIONS;

/// One page of this node's entries with a version of at least
/// `since_version` (and a key in the request's hash ranges, if it names
/// any; more than [`MAX_SCAN_RANGES`] is refused). Keys and values stop at
/// half the message size limit, so the answer (and the batch that copies
/// it) stays under it.
/// `Err` holds the number of ranges asked for, when too many.
pub(crate) fn scan(shared: &Shared, r: &pb::ScanRequest) -> Result<pb::ScanResponse, usize> {
    if r.ranges.len() > MAX_SCAN_RANGES {
        return Err(r.ranges.len());
    }
    let only = Ranges::new(&r.ranges);
    let max_entries = match r.max_entries {
        0 => DEFAULT_SCAN_ENTRIES,
        n => usize::try_from(n)
            .unwrap_or(MAX_SCAN_ENTRIES)
            .min(MAX_SCAN_ENTRIES),
    };
    let page = shared.store.scan(
        r.cursor,
        r.since_version,
        max_entries,
        shared.max_message_bytes / 2,
        only.as_ref(),
    );
    Ok(pb::ScanResponse {
        entries: page
            .items
            .into_iter()
            .map(|it| pb::ScanEntry {
                key: it.key,
                tombstone: it.value.is_none(),
                value: it.value.unwrap_or_default(),
                version: it.version,
                ttl_ms: it.ttl_ms,
            })
            .collect(),
        next_cursor: page.next,
        done: page.done,
    })
}

/// Raises or lifts this node's fence, as asked.
pub(crate) fn fence(shared: &Shared, r: pb::FenceRequest) -> pb::FenceResponse {
    let fence = &shared.fence;
    let lift = match pb::FenceAction::try_from(r.action) {
        Ok(pb::FenceAction::Unfence) => fence.lift(r.incarnation, r.epoch),
        // An unknown action fences: the safe reading of a newer client.
        _ => {
            let reason = if r.reason.is_empty() {
                "fenced by a client".to_owned()
            } else {
                r.reason.chars().take(200).collect()
            };
            Lift {
                lifted: false,
                state: fence.raise(r.since_ms, reason),
                retry_after: Duration::ZERO,
            }
        }
    };
    pb::FenceResponse {
        incarnation: fence.incarnation,
        fence: Some(lift.state),
        lifted: lift.lifted,
        retry_after_ms: u64::try_from(lift.retry_after.as_millis()).unwrap_or(u64::MAX),
    }
}
