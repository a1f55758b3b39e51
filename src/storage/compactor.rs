//! Compacting storage's history on a schedule, as kube-apiserver's compactor does.
//!
//! Every interval, each process runs one round of an election ([`Storage::claim_compaction`]):
//! a compare-and-swap on the version of `compact_rev_key`. The one process whose round
//! succeeds compacts to the revision it saw at the *previous* round, so at least one interval of
//! history is always kept: a watcher or a paginated list that is less than one interval behind
//! never meets a compacted revision. The others learn the key's new version and try again next
//! interval, so replicas on one etcd (and kube-apiservers beside them) compact once per
//! interval between them, not once each.
//!
//! The first round only records the revision: nothing is compacted at start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Revision, Storage, StorageError};

/// What the compactor has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct CompactorStats {
    /// Compactions this process made.
    pub compactions: AtomicU64,
    /// Rounds that another process won.
    pub lost_rounds: AtomicU64,
    /// Rounds that failed (storage unreachable and the like).
    pub failures: AtomicU64,
    /// The revision this process last compacted to.
    pub compacted_revision: AtomicU64,
}

/// The state carried from one round to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// The claim's version this process last saw.
    pub seen_version: i64,
    /// Storage's revision at the last round: what the next winning round compacts to.
    pub revision: Revision,
}

/// Runs one round: claims, and compacts if the claim was won and a revision is recorded.
/// Returns the state for the next round. On an error the state is kept, so the next round
/// retries with what was known.
pub async fn round(storage: &dyn Storage, state: Round, stats: &CompactorStats) -> Round {
    let claim = match storage.claim_compaction(state.seen_version, state.revision).await {
        Ok(claim) => claim,
        Err(error) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, "compaction round failed: storage did not answer the claim");
            return state;
        }
    };
    let next = Round { seen_version: claim.version, revision: claim.current_revision };
    if !claim.won {
        stats.lost_rounds.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(version = claim.version, "another process compacts this round");
        return next;
    }
    if state.revision == 0 {
        return next;
    }
    match storage.compact(state.revision).await {
        Ok(()) => {
            stats.compactions.fetch_add(1, Ordering::Relaxed);
            stats.compacted_revision.store(state.revision, Ordering::Relaxed);
            tracing::info!(revision = state.revision, "compacted storage history");
        }
        // Already compacted further, by etcd's own auto-compaction or the embedded store's
        // history window: nothing to do.
        Err(StorageError::Compacted { .. }) => {
            tracing::debug!(revision = state.revision, "history already compacted past this revision")
        }
        Err(error) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%error, revision = state.revision, "compaction failed");
        }
    }
    next
}

/// Starts the compactor: a round every `interval`, the first one at once (it only records the
/// revision), so the first compaction comes one interval after start.
pub fn spawn(
    storage: Arc<dyn Storage>,
    interval: Duration,
    stats: Arc<CompactorStats>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut state = Round::default();
        // The first round runs at once, recording the revision to compact to a full interval
        // later; no history is lost at start.
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            state = round(storage.as_ref(), state, &stats).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::embedded::{EmbeddedOptions, EmbeddedStorage};
    use crate::storage::ListOptions;
    use bytes::Bytes;

    /// Each winning round compacts to the revision the round before saw: history written since
    /// the last round survives, older history goes.
    #[tokio::test]
    async fn a_round_compacts_to_the_revision_of_the_round_before() {
        let storage = EmbeddedStorage::in_memory(EmbeddedOptions::default()).unwrap();
        let stats = CompactorStats::default();
        for index in 0..3 {
            storage.create(&format!("/things/a{index}"), Bytes::from_static(b"{}")).await.unwrap();
        }
        // The first round only records where history stands.
        let first = round(&storage, Round::default(), &stats).await;
        assert_eq!(first.revision, storage.current_revision().await.unwrap());
        assert_eq!(stats.compactions.load(Ordering::Relaxed), 0);
        let old = ListOptions { revision: Some(2), ..ListOptions::default() };
        assert!(storage.list("/things/", old.clone()).await.is_ok(), "nothing compacted at start");

        for index in 0..3 {
            storage.create(&format!("/things/b{index}"), Bytes::from_static(b"{}")).await.unwrap();
        }
        let second = round(&storage, first, &stats).await;
        assert_eq!(stats.compactions.load(Ordering::Relaxed), 1);
        assert_eq!(stats.compacted_revision.load(Ordering::Relaxed), first.revision);
        assert!(matches!(storage.list("/things/", old).await, Err(StorageError::Compacted { .. })));
        // The revision of the first round and everything after it are still there.
        let kept = ListOptions { revision: Some(first.revision), ..ListOptions::default() };
        assert_eq!(storage.list("/things/", kept).await.unwrap().items.len(), 3);
        assert!(storage.watch("/things/", first.revision).await.is_ok());
        assert_eq!(storage.count("/things/").await.unwrap(), 6);

        // With no write between two rounds, the second asks for a revision already compacted
        // to: not a failure, and not counted as a compaction.
        let third = round(&storage, second, &stats).await;
        assert_eq!(stats.compactions.load(Ordering::Relaxed), 2);
        let _ = round(&storage, third, &stats).await;
        assert_eq!(stats.compactions.load(Ordering::Relaxed), 2);
        assert_eq!(stats.failures.load(Ordering::Relaxed), 0);
    }
}
