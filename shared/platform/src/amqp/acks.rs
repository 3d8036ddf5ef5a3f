//! Settling a consumer channel's deliveries: one task per channel sends every ack and nack, and
//! acknowledges a run of finished messages with one `multiple` ack.
//!
//! A batch's messages finish together, and batches mostly finish in delivery order, so most of a
//! worker's acks can be one frame for many messages: the broker then settles them in one command
//! (for a quorum queue, one log entry instead of one per message). But several batches are in
//! flight at once, and a `multiple` ack settles *every* unsettled delivery up to its tag, so it may
//! only be sent up to the first delivery still being handled: an ack past it would settle a
//! message whose work is not done, and a crash would then lose it. A message that finishes behind
//! one still being handled waits [`HOLD`] for it, then is acked alone, so a slow message (a Salto
//! server that takes seconds) never keeps the others' acks — and the prefetch they count against
//! — waiting.
//!
//! The bookkeeping, [`Unsettled`], is a plain structure the tests drive without a broker; the task
//! ([`spawn`]) feeds it events in the order they happened and sends the frames it returns in the
//! order it returns them, one at a time: a nack must reach the broker before a `multiple` ack past
//! its tag, or that ack would settle the message the nack hands back.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a finished message waits for the messages delivered before it to finish, so that one
/// `multiple` ack covers it too, before it is acked alone. Batches running side by side finish
/// within a few milliseconds of each other; a message held this long holds its prefetch slot no
/// longer than a batch takes.
pub const HOLD: Duration = Duration::from_millis(20);

/// A delivery's tag on its channel (the broker numbers a channel's deliveries 1, 2, 3, …).
pub type DeliveryTag = u64;

/// How a handled message leaves the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Its work is done (or its outcome, a retry or a dead letter, is on the broker).
    Ack,
    /// Its outcome could not be recorded: the broker delivers it again.
    Requeue,
}

/// A frame for the broker, in the order it must be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `basic.ack` with `multiple`: every unsettled delivery up to and including the tag.
    AckUpTo(DeliveryTag),
    /// `basic.ack` of this delivery alone.
    Ack(DeliveryTag),
    /// `basic.nack` with `requeue`, of this delivery alone.
    Requeue(DeliveryTag),
}

/// The deliveries of one channel not settled yet, in tag order.
#[derive(Debug)]
pub struct Unsettled {
    /// `None` while the message is being handled; `Some(when)` once it finished (to be acked)
    /// at `when`, waiting for an earlier one.
    deliveries: BTreeMap<DeliveryTag, Option<Instant>>,
    hold: Duration,
}

impl Unsettled {
    pub fn new(hold: Duration) -> Self {
        Self {
            deliveries: BTreeMap::new(),
            hold,
        }
    }

    /// The broker delivered `tag`; its handler starts.
    pub fn delivered(&mut self, tag: DeliveryTag) {
        self.deliveries.insert(tag, None);
    }

    /// `tag`'s handler is done with it. A requeue goes out at once (its frame is returned); an
    /// ack waits for [`Self::finished_run`] or [`Self::due`].
    pub fn finished(
        &mut self,
        tag: DeliveryTag,
        settlement: Settlement,
        now: Instant,
    ) -> Option<Frame> {
        match settlement {
            Settlement::Requeue => {
                self.deliveries.remove(&tag);
                Some(Frame::Requeue(tag))
            }
            Settlement::Ack => match self.deliveries.get_mut(&tag) {
                Some(state) => {
                    *state = Some(now);
                    None
                }
                // Not delivered on this channel's books (cannot happen: every delivery is
                // noted before its handler starts); settle it alone rather than hold it.
                None => Some(Frame::Ack(tag)),
            },
        }
    }

    /// The frame that acks the finished messages ahead of every one still being handled: one
    /// `multiple` ack for the run (a plain ack for a run of one).
    pub fn finished_run(&mut self) -> Option<Frame> {
        let mut last = None;
        let mut count = 0;
        while let Some(entry) = self.deliveries.first_entry() {
            if entry.get().is_none() {
                break;
            }
            last = Some(entry.remove_entry().0);
            count += 1;
        }
        last.map(|tag| {
            if count == 1 {
                Frame::Ack(tag)
            } else {
                Frame::AckUpTo(tag)
            }
        })
    }

    /// The finished messages that have waited [`HOLD`] behind one still being handled: each is
    /// acked alone.
    pub fn due(&mut self, now: Instant) -> Vec<Frame> {
        let due: Vec<DeliveryTag> = self
            .deliveries
            .iter()
            .filter(|(_, finished)| finished.is_some_and(|at| now >= at + self.hold))
            .map(|(tag, _)| *tag)
            .collect();
        for tag in &due {
            self.deliveries.remove(tag);
        }
        due.into_iter().map(Frame::Ack).collect()
    }

    /// When the next finished message falls due, if one waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.deliveries
            .values()
            .flatten()
            .min()
            .map(|at| *at + self.hold)
    }

    /// At the end of the channel's life: every finished message acked (the run ahead in one
    /// frame, the others alone). Those still unfinished (their handling was cut short) stay
    /// unsettled, and the broker delivers them again once the channel closes.
    pub fn finish(&mut self) -> Vec<Frame> {
        let mut frames: Vec<Frame> = self.finished_run().into_iter().collect();
        let finished: Vec<DeliveryTag> = self
            .deliveries
            .iter()
            .filter(|(_, finished)| finished.is_some())
            .map(|(tag, _)| *tag)
            .collect();
        for tag in finished {
            self.deliveries.remove(&tag);
            frames.push(Frame::Ack(tag));
        }
        frames
    }
}

enum Event {
    Delivered(DeliveryTag),
    Finished(DeliveryTag, Settlement),
}

/// Where a channel's deliveries are reported; cheap to clone into each delivery's task. The
/// settling task ends, after sending what is left, once every clone is dropped.
#[derive(Clone)]
pub struct Settler {
    events: mpsc::UnboundedSender<Event>,
}

impl Settler {
    /// Noted before the delivery's handler starts, so that no `multiple` ack passes it.
    pub fn delivered(&self, tag: DeliveryTag) {
        // The task lives until every sender is dropped, so this cannot fail while `self` lives.
        let _ = self.events.send(Event::Delivered(tag));
    }

    pub fn finished(&self, tag: DeliveryTag, settlement: Settlement) {
        let _ = self.events.send(Event::Finished(tag, settlement));
    }
}

/// Starts the task that settles `channel`'s deliveries. Await its handle after dropping every
/// [`Settler`] clone to know the last frames were sent.
pub fn spawn(channel: Channel, queue: &'static str) -> (Settler, JoinHandle<()>) {
    let (events, received) = mpsc::unbounded_channel();
    let task = tokio::spawn(settle(channel, received, queue));
    (Settler { events }, task)
}

async fn settle(channel: Channel, mut events: mpsc::UnboundedReceiver<Event>, queue: &'static str) {
    let mut unsettled = Unsettled::new(HOLD);
    let mut frames = Vec::new();
    loop {
        let next_due = unsettled.next_due();
        let event = tokio::select! {
            event = events.recv() => match event {
                Some(event) => Some(event),
                None => break,
            },
            () = sleep_until(next_due), if next_due.is_some() => None,
        };
        if let Some(event) = event {
            apply(&mut unsettled, event, &mut frames);
            // The rest of a batch finishes at the same moment: let those tasks report too, so
            // that one frame acks them all.
            tokio::task::yield_now().await;
            while let Ok(event) = events.try_recv() {
                apply(&mut unsettled, event, &mut frames);
            }
            frames.extend(unsettled.finished_run());
        }
        frames.extend(unsettled.due(Instant::now()));
        send(&channel, frames.drain(..), queue).await;
    }
    send(&channel, unsettled.finish().into_iter(), queue).await;
}

fn apply(unsettled: &mut Unsettled, event: Event, frames: &mut Vec<Frame>) {
    match event {
        Event::Delivered(tag) => unsettled.delivered(tag),
        Event::Finished(tag, settlement) => {
            frames.extend(unsettled.finished(tag, settlement, Instant::now()));
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends the frames one after another (their order matters: see the module's paragraph). A frame
/// that cannot be sent means the channel is gone: its unsettled deliveries go back to the queue,
/// and the handlers' idempotence makes handling them again harmless.
async fn send(channel: &Channel, frames: impl Iterator<Item = Frame>, queue: &'static str) {
    for frame in frames {
        let sent = match frame {
            Frame::AckUpTo(tag) => {
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
            }
            Frame::Ack(tag) => channel.basic_ack(tag, BasicAckOptions::default()).await,
            Frame::Requeue(tag) => {
                channel
                    .basic_nack(
                        tag,
                        BasicNackOptions {
                            requeue: true,
                            multiple: false,
                        },
                    )
                    .await
            }
        };
        if let Err(error) = sent {
            tracing::warn!(queue, ?frame, %error, "ack/nack failed; the broker will redeliver");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn books(delivered: std::ops::RangeInclusive<DeliveryTag>) -> Unsettled {
        let mut unsettled = Unsettled::new(HOLD);
        for tag in delivered {
            unsettled.delivered(tag);
        }
        unsettled
    }

    #[test]
    fn a_batch_finished_in_delivery_order_is_acked_with_one_frame() {
        let mut unsettled = books(1..=32);
        let now = Instant::now();
        for tag in 1..=32 {
            assert_eq!(unsettled.finished(tag, Settlement::Ack, now), None);
        }
        assert_eq!(unsettled.finished_run(), Some(Frame::AckUpTo(32)));
        assert_eq!(unsettled.finished_run(), None);
        assert_eq!(unsettled.next_due(), None);
    }

    #[test]
    fn no_ack_passes_a_message_still_being_handled() {
        let mut unsettled = books(1..=4);
        let now = Instant::now();
        unsettled.finished(1, Settlement::Ack, now);
        unsettled.finished(3, Settlement::Ack, now);
        unsettled.finished(4, Settlement::Ack, now);
        assert_eq!(unsettled.finished_run(), Some(Frame::Ack(1)));
        assert_eq!(unsettled.finished_run(), None, "2 is still being handled");
        // 2 finishes within the hold: 2, 3 and 4 go in one frame.
        unsettled.finished(2, Settlement::Ack, now + HOLD / 2);
        assert_eq!(unsettled.finished_run(), Some(Frame::AckUpTo(4)));
    }

    #[test]
    fn a_message_finished_behind_a_slow_one_is_acked_alone_after_the_hold() {
        let mut unsettled = books(1..=3);
        let now = Instant::now();
        unsettled.finished(2, Settlement::Ack, now);
        unsettled.finished(3, Settlement::Ack, now + Duration::from_millis(5));
        assert_eq!(unsettled.finished_run(), None);
        assert_eq!(unsettled.next_due(), Some(now + HOLD));
        assert_eq!(unsettled.due(now + HOLD - Duration::from_millis(1)), vec![]);
        assert_eq!(unsettled.due(now + HOLD), vec![Frame::Ack(2)]);
        assert_eq!(
            unsettled.due(now + HOLD + Duration::from_millis(5)),
            vec![Frame::Ack(3)]
        );
        // The slow one, when it finishes, is acked alone too.
        unsettled.finished(1, Settlement::Ack, now + Duration::from_secs(5));
        assert_eq!(unsettled.finished_run(), Some(Frame::Ack(1)));
        assert_eq!(unsettled.next_due(), None);
    }

    #[test]
    fn a_requeue_goes_out_at_once_and_a_later_run_acks_past_it() {
        let mut unsettled = books(1..=3);
        let now = Instant::now();
        assert_eq!(
            unsettled.finished(1, Settlement::Requeue, now),
            Some(Frame::Requeue(1))
        );
        unsettled.finished(2, Settlement::Ack, now);
        unsettled.finished(3, Settlement::Ack, now);
        // The nack was returned first, so it reaches the broker before this ack covers tag 1.
        assert_eq!(unsettled.finished_run(), Some(Frame::AckUpTo(3)));
    }

    #[test]
    fn a_requeue_ahead_frees_the_run_behind_it() {
        let mut unsettled = books(1..=3);
        let now = Instant::now();
        unsettled.finished(2, Settlement::Ack, now);
        unsettled.finished(3, Settlement::Ack, now);
        assert_eq!(unsettled.finished_run(), None);
        assert_eq!(
            unsettled.finished(1, Settlement::Requeue, now),
            Some(Frame::Requeue(1))
        );
        assert_eq!(unsettled.finished_run(), Some(Frame::AckUpTo(3)));
    }

    #[test]
    fn at_the_end_every_finished_message_is_acked_and_an_unfinished_one_is_left() {
        let mut unsettled = books(1..=5);
        let now = Instant::now();
        for tag in [1, 2, 4, 5] {
            unsettled.finished(tag, Settlement::Ack, now);
        }
        assert_eq!(
            unsettled.finish(),
            vec![Frame::AckUpTo(2), Frame::Ack(4), Frame::Ack(5)]
        );
        assert_eq!(unsettled.next_due(), None);
    }
}
