//! Handling the messages a worker has in hand together (docs/architecture.md, "Batches"; README,
//! Performance): what handlers submit while a batch of their group is running goes into the
//! group's next batch, so a busy worker pays one transaction, one commit and one wait for
//! confirms per batch instead of per message, and an idle worker's message starts at once —
//! nothing waits for a batch to fill.
//!
//! Messages are grouped by a key the service chooses (ipassan-sync: the tenant), and each group
//! runs at most `max_running` batches at a time, so a slow outside system holds only its own
//! group's messages. A batch that panics, or answers for the wrong number of items, answers
//! nothing: each submitter then handles its message alone ([`Batches::submit`] returns `None`),
//! so one bad message never fails the others.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use serde::Deserialize;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{Semaphore, oneshot};

use crate::config::{ConfigError, Validate};

/// `CONNECX__BATCH__*`: how a worker batches the messages it has in hand.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct BatchSettings {
    /// Messages one batch handles at most (default 32; 1: every message is handled alone, as
    /// without batching).
    #[serde(default = "default_max_messages")]
    pub max_messages: usize,
    /// Batches one group (ipassan-sync: one iPassan tenant) runs at once (default 2: while one
    /// batch talks to the outside system, the next one gathers and starts).
    #[serde(default = "default_max_running")]
    pub max_running: usize,
}

fn default_max_messages() -> usize {
    32
}

fn default_max_running() -> usize {
    2
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_messages: default_max_messages(),
            max_running: default_max_running(),
        }
    }
}

impl BatchSettings {
    /// Whether messages are batched at all.
    pub fn batching(&self) -> bool {
        self.max_messages > 1
    }

    /// Says so in the log when a pool of `max_connections` is smaller than the connections a
    /// worker's messages hold while they talk to the outside system: batched, one per running
    /// batch (per group: a pool this small makes even one group's batches wait); alone, one per
    /// message in flight (`prefetch`).
    pub fn warn_unless_pool_holds(&self, max_connections: u32, prefetch: u16) {
        let holding = if self.batching() {
            self.max_running
        } else {
            usize::from(prefetch)
        };
        if (max_connections as usize) < holding {
            tracing::warn!(
                max_connections,
                prefetch,
                batch_max_running = self.max_running,
                "database pool smaller than the connections messages in flight hold; \
                 messages may wait for a connection"
            );
        }
    }
}

impl Validate for BatchSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_messages == 0 {
            return Err(ConfigError::invalid(
                "batch.max_messages",
                "must be at least 1 (1: no batching)",
            ));
        }
        if self.max_running == 0 {
            return Err(ConfigError::invalid(
                "batch.max_running",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// What a batch of items does together.
pub trait BatchWork: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    /// Handles `items` together and answers one output per item, in their order.
    fn run(&self, items: Vec<Self::Item>) -> impl Future<Output = Vec<Self::Output>> + Send;
}

/// Items waiting for a batch, by group. Batches run inside the submitters' own tasks (a
/// submitter that gets one of its group's running slots runs batches until its own item is
/// answered), so a task the worker runtime aborts at the end of a shutdown's drain takes its
/// batch, and the database connection the batch holds, with it.
pub struct Batches<K, W: BatchWork> {
    /// The worker's queue: the metrics' `queue` label.
    queue: &'static str,
    work: Arc<W>,
    /// One entry per group ever seen (ipassan-sync: per tenant, a handful).
    groups: Mutex<HashMap<K, Group<W>>>,
    max_items: usize,
    max_running: usize,
    batches_run: AtomicU64,
    items_run: AtomicU64,
}

type Waiting<W> = (
    <W as BatchWork>::Item,
    oneshot::Sender<<W as BatchWork>::Output>,
);

struct Group<W: BatchWork> {
    waiting: VecDeque<Waiting<W>>,
    /// The group's running slots: `max_running` permits.
    running: Arc<Semaphore>,
}

impl<K, W> Batches<K, W>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    W: BatchWork,
{
    /// At most `max_items` items a batch and `max_running` batches at a time in each group
    /// (both at least 1), for the worker of `queue`. Each batch counts in
    /// `connecx_batches_total{queue}` and its items in `connecx_batched_messages_total{queue}`.
    pub fn new(queue: &'static str, work: Arc<W>, max_items: usize, max_running: usize) -> Self {
        Self {
            queue,
            work,
            groups: Mutex::new(HashMap::new()),
            max_items: max_items.max(1),
            max_running: max_running.max(1),
            batches_run: AtomicU64::new(0),
            items_run: AtomicU64::new(0),
        }
    }

    /// The work the batches run.
    pub fn work(&self) -> &W {
        &self.work
    }

    /// Handles `item` in a batch of group `key` and answers its output; `None` when the batch
    /// gave no answer for it (it panicked, or its task was stopped), and the caller must handle
    /// the item alone.
    pub async fn submit(&self, key: K, item: W::Item) -> Option<W::Output> {
        let (answer, mut answered) = oneshot::channel();
        let running = {
            let mut groups = self.lock();
            let group = groups.entry(key.clone()).or_insert_with(|| Group {
                waiting: VecDeque::new(),
                running: Arc::new(Semaphore::new(self.max_running)),
            });
            group.waiting.push_back((item, answer));
            Arc::clone(&group.running)
        };
        tokio::select! {
            biased;
            output = &mut answered => output.ok(),
            slot = running.acquire() => {
                // The semaphore is never closed.
                let _slot = slot.ok()?;
                loop {
                    let Some(batch) = self.take(&key) else {
                        // What waited is in other slots' batches, this item's too.
                        break answered.await.ok();
                    };
                    self.run(batch).await;
                    match answered.try_recv() {
                        Ok(output) => break Some(output),
                        Err(TryRecvError::Closed) => break None,
                        Err(TryRecvError::Empty) => {}
                    }
                }
            }
        }
    }

    /// How many batches, and items in them, have run so far (as the metrics count them).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.batches_run.load(Ordering::Relaxed),
            self.items_run.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Group<W>>> {
        // The lock guards only queue moves, which cannot panic half-way.
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch of group `key`: what waits, up to `max_items`, oldest first.
    fn take(&self, key: &K) -> Option<Vec<Waiting<W>>> {
        let mut groups = self.lock();
        let group = groups.get_mut(key)?;
        let count = group.waiting.len().min(self.max_items);
        (count > 0).then(|| group.waiting.drain(..count).collect())
    }

    /// Runs one batch and answers its items. A batch that panics answers none of them.
    async fn run(&self, batch: Vec<Waiting<W>>) {
        let (items, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let expected = items.len();
        self.batches_run.fetch_add(1, Ordering::Relaxed);
        self.items_run.fetch_add(expected as u64, Ordering::Relaxed);
        let labels = [("queue", self.queue)];
        metrics::counter!("connecx_batches_total", &labels).increment(1);
        metrics::counter!("connecx_batched_messages_total", &labels).increment(expected as u64);
        match std::panic::AssertUnwindSafe(self.work.run(items))
            .catch_unwind()
            .await
        {
            Ok(outputs) if outputs.len() == expected => {
                for (answer, output) in answers.into_iter().zip(outputs) {
                    let _ = answer.send(output);
                }
            }
            Ok(outputs) => tracing::error!(
                items = expected,
                outputs = outputs.len(),
                "a batch answered for the wrong number of items; each is handled alone"
            ),
            Err(_) => tracing::error!(
                items = expected,
                "a batch panicked; each of its items is handled alone"
            ),
        }
    }
}

/// For each item, whether it is the first of its key in `items` (a batch handles one message per
/// booking; the later ones of a booking are handled alone after it).
pub fn first_of_each<T, K: Eq + Hash>(items: &[T], key: impl Fn(&T) -> K) -> Vec<bool> {
    let mut seen = std::collections::HashSet::new();
    items.iter().map(|item| seen.insert(key(item))).collect()
}

/// The items [`first_of_each`] marked, in their order: what a batch handles together.
pub fn firsts<'a, T>(items: &'a [T], marks: &[bool]) -> Vec<&'a T> {
    items
        .iter()
        .zip(marks)
        .filter_map(|(item, first)| first.then_some(item))
        .collect()
}

/// A batch's answers for its [`firsts`], spread back over all its items in their order: `None`
/// (handled alone) for the later items of a key, and for every item when `answers` is `None` —
/// handling the firsts together failed before any of them was answered.
pub fn spread<R>(marks: &[bool], answers: Option<Vec<Option<R>>>) -> Vec<Option<R>> {
    let mut answers = answers.unwrap_or_default().into_iter();
    marks
        .iter()
        .map(|first| {
            if *first {
                answers.next().flatten()
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    /// Doubles numbers, slowly, remembering each batch; 13 panics.
    struct Doubling {
        batches: Mutex<Vec<Vec<u32>>>,
        delay: Duration,
    }

    impl BatchWork for Doubling {
        type Item = u32;
        type Output = u32;
        async fn run(&self, items: Vec<u32>) -> Vec<u32> {
            self.batches.lock().unwrap().push(items.clone());
            tokio::time::sleep(self.delay).await;
            assert!(!items.contains(&13), "unlucky");
            items.into_iter().map(|n| n * 2).collect()
        }
    }

    fn doubling(delay_ms: u64) -> Arc<Doubling> {
        Arc::new(Doubling {
            batches: Mutex::new(Vec::new()),
            delay: Duration::from_millis(delay_ms),
        })
    }

    #[tokio::test]
    async fn an_idle_group_runs_an_item_at_once_and_a_busy_one_gathers_what_waits() {
        let work = doubling(50);
        let batches = Arc::new(Batches::new("test", Arc::clone(&work), 10, 1));
        let submit = |n: u32| {
            let batches = Arc::clone(&batches);
            tokio::spawn(async move { batches.submit("a", n).await })
        };
        let mut submitted = vec![submit(1)];
        while work.batches.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        submitted.extend((2..=5).map(submit));
        let mut answers = Vec::new();
        for task in submitted {
            answers.push(task.await.unwrap());
        }
        assert_eq!(answers, [2, 4, 6, 8, 10].map(Some));
        let seen = work.batches.lock().unwrap().clone();
        assert_eq!(
            seen.len(),
            2,
            "the first alone, the rest together: {seen:?}"
        );
        assert_eq!(seen[0].len(), 1);
        assert_eq!(seen[1].len(), 4);
        assert_eq!(batches.counts(), (2, 5));
    }

    #[tokio::test]
    async fn a_batch_holds_at_most_max_items() {
        let work = doubling(20);
        let batches = Batches::new("test", Arc::clone(&work), 2, 1);
        let answers = futures::future::join_all((1..=5).map(|n| batches.submit("a", n))).await;
        assert_eq!(answers, [2, 4, 6, 8, 10].map(Some));
        let seen = work.batches.lock().unwrap().clone();
        assert!(seen.iter().all(|b| b.len() <= 2), "{seen:?}");
        assert_eq!(seen.concat(), [1, 2, 3, 4, 5], "in the order submitted");
    }

    /// Holds every batch of group "stuck" until the test opens the gate.
    struct Gated {
        gate: tokio::sync::Semaphore,
    }

    impl BatchWork for Gated {
        type Item = (&'static str, u32);
        type Output = u32;
        async fn run(&self, items: Vec<(&'static str, u32)>) -> Vec<u32> {
            if items.iter().any(|(group, _)| *group == "stuck") {
                let _open = self.gate.acquire().await.unwrap();
            }
            items.into_iter().map(|(_, n)| n).collect()
        }
    }

    #[tokio::test]
    async fn a_stuck_group_holds_no_other_group() {
        let work = Arc::new(Gated {
            gate: tokio::sync::Semaphore::new(0),
        });
        let batches = Arc::new(Batches::new("test", Arc::clone(&work), 10, 1));
        let stuck = {
            let batches = Arc::clone(&batches);
            tokio::spawn(async move { batches.submit("stuck", ("stuck", 1)).await })
        };
        tokio::task::yield_now().await;
        let other = tokio::time::timeout(
            Duration::from_secs(10),
            batches.submit("other", ("other", 2)),
        )
        .await
        .expect("the other group ran while the stuck one waited");
        assert_eq!(other, Some(2));
        assert!(!stuck.is_finished());
        work.gate.add_permits(1);
        assert_eq!(stuck.await.unwrap(), Some(1));
    }

    #[test]
    fn the_firsts_answers_go_back_to_their_items_and_the_later_ones_go_alone() {
        let items = [("a", 1), ("b", 2), ("a", 3), ("c", 4)];
        let marks = first_of_each(&items, |item| item.0);
        let together = firsts(&items, &marks);
        assert_eq!(together, vec![&("a", 1), &("b", 2), &("c", 4)]);
        let answered = spread(&marks, Some(vec![Some(10), None, Some(40)]));
        assert_eq!(answered, vec![Some(10), None, None, Some(40)]);
        let failed: Vec<Option<i32>> = spread(&marks, None);
        assert_eq!(failed, vec![None; 4]);
    }

    #[test]
    fn only_the_first_item_of_a_key_is_marked() {
        assert_eq!(
            first_of_each(&[1, 2, 1, 3, 2], |n| *n),
            [true, true, false, true, false]
        );
    }

    #[tokio::test]
    async fn a_batch_that_panics_answers_none_and_the_group_goes_on() {
        let work = doubling(0);
        let batches = Batches::new("test", Arc::clone(&work), 10, 1);
        assert_eq!(batches.submit("a", 13).await, None);
        assert_eq!(batches.submit("a", 4).await, Some(8));
    }
}
