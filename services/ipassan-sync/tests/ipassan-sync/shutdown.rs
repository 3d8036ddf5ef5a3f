//! SIGTERM under load: the real binary stops taking messages, finishes the ones it holds, and
//! exits 0. Every message it acknowledged was fully handled (its visitor exists and its result
//! is out); every one it had not finished is back in the queue, and a new replica completes it.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipassan_sim::model::{Fault, FaultMatch, FaultResponse};
use uuid::Uuid;

use crate::support::{FROM, Harness, Options, QUEUE, TO, booking, created, start_with, until};

const BOOKINGS: usize = 120;

/// The service binary as a child process, its output kept in a file for the failure message.
struct Replica {
    child: tokio::process::Child,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(env: &[(String, String)], name: &str) -> Replica {
        let log = std::env::temp_dir().join(format!("ipassan-sync-{name}-{}.log", Uuid::new_v4()));
        let out = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ipassan-sync"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("CONNECX__LOG__LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("the ipassan-sync binary starts");
        Replica { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("still running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
}

/// The harness without an in-process replica, its iPassan answering `method` calls (any when
/// `None`) after `delay_ms`, the first `times` of them.
async fn slow_ipassan(method: Option<&str>, delay_ms: u64, times: u32) -> Harness {
    let harness = start_with(Options {
        in_process: false,
        ..Options::default()
    })
    .await;
    harness
        .control
        .add_fault(&Fault {
            matches: FaultMatch {
                method: method.map(String::from),
                path_prefix: Some("/api".into()),
            },
            respond: FaultResponse {
                delay_ms: Some(delay_ms),
                ..FaultResponse::default()
            },
            times,
        })
        .await
        .unwrap();
    harness
}

/// Calls the slow iPassan of [`slow_ipassan`] (`times` of them slowed) has taken so far. A call
/// takes its slowing when it arrives and is answered only after the delay, so these are calls
/// under way or answered late; iPassan's request log lists a call only once it is answered.
fn slowed_calls(harness: &Harness, times: u32) -> u32 {
    let left: u32 = harness
        .sim
        .state
        .world()
        .faults
        .iter()
        .map(|f| f.times)
        .sum();
    times - left
}

/// Collects result events into `done` until it holds `count` bookings (panics after 60 s, with
/// `replica`'s output).
async fn until_done(
    harness: &mut Harness,
    done: &mut BTreeSet<Uuid>,
    count: usize,
    replica: &Replica,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} bookings done:\n{}",
            done.len(),
            replica.output()
        );
        if let Some(result) = harness.results.next(Duration::from_secs(1)).await {
            done.insert(result.booking_id);
        }
    }
}

/// Sends SIGTERM to `replica` and waits for it to exit 0; returns how long that took.
async fn stop(mut replica: Replica, within: Duration) -> (Duration, String) {
    replica.terminate();
    let asked = Instant::now();
    let status = tokio::time::timeout(within, replica.child.wait())
        .await
        .unwrap_or_else(|_| panic!("no exit {within:?} after SIGTERM:\n{}", replica.output()))
        .unwrap();
    let took = asked.elapsed();
    assert!(status.success(), "exit {status}:\n{}", replica.output());
    (took, replica.output())
}

#[tokio::test]
async fn sigterm_under_load_finishes_what_it_holds_exits_0_and_loses_nothing() {
    // Every iPassan call takes 500 ms, so a replica always holds messages mid-handling.
    let mut harness = slow_ipassan(None, 500, 100_000).await;

    let first = Replica::start(&harness.process_env(), "first");
    harness
        .broker
        .wait_for_consumer(QUEUE, Duration::from_secs(30))
        .await;
    // All at once, on one connection: the load must still be there when the SIGTERM comes.
    let ids: Vec<Uuid> = (0..BOOKINGS).map(|_| Uuid::new_v4()).collect();
    let events: Vec<_> = ids
        .iter()
        .map(|id| created(*id, booking(FROM, TO)))
        .collect();
    platform::amqp::Publisher::new(&harness.amqp_settings(), "shutdown-test")
        .publish_events(&events)
        .await
        .unwrap();
    let mut done = BTreeSet::new();
    while done.len() < 3 {
        done.insert(harness.next_result().await.booking_id);
    }

    let (took, output) = stop(first, Duration::from_secs(30)).await;
    assert!(output.contains("SIGTERM received"), "{output}");
    assert!(output.contains("worker stopped"), "{output}");

    // Acked = finished: each result out by now names a booking whose visitor exists with a
    // PIN; every other message is back in the queue, none dropped.
    while let Some(result) = harness.results.next(Duration::from_millis(500)).await {
        assert_eq!(result.routing_key(), "visitor_access.granted.v1");
        done.insert(result.booking_id);
    }
    for id in &done {
        let visitors = harness.visitors_for(*id).await;
        assert_eq!(visitors.len(), 1, "{id}: {visitors:?}");
        assert!(visitors[0].credential.is_some(), "{id}: {visitors:?}");
    }
    let waiting = harness.broker.queue_depth(QUEUE).await as usize;
    assert!(
        done.len() < BOOKINGS,
        "the load outlasted the SIGTERM (all {BOOKINGS} were done in {took:?}); slow the simulator further"
    );
    assert_eq!(
        done.len() + waiting,
        BOOKINGS,
        "every message is either handled ({}) or back in the queue ({waiting})",
        done.len()
    );

    // A new replica takes over and completes the rest; nothing is done twice.
    let second = Replica::start(&harness.process_env(), "second");
    until_done(&mut harness, &mut done, BOOKINGS, &second).await;
    for id in &ids {
        assert_eq!(
            harness.visitors_for(*id).await.len(),
            1,
            "{id}: one visitor"
        );
    }
    harness.no_dead_letters(Duration::from_millis(200)).await;
    eprintln!(
        "SIGTERM to exit: {took:?}; finished before the stop: {} of {BOOKINGS}",
        BOOKINGS - waiting
    );
}

#[tokio::test]
async fn work_that_outlasts_the_drain_bound_is_handed_back_and_done_by_the_next_replica() {
    // The first calls to iPassan (its token included) hang for 4 s: longer than the 1 s drain
    // bound.
    const SLOWED: u32 = 8;
    let mut harness = slow_ipassan(Some("POST"), 4_000, SLOWED).await;
    let mut env = harness.process_env();
    env.push(("CONNECX__AMQP__DRAIN_TIMEOUT_SECS".into(), "1".into()));
    let first = Replica::start(&env, "bounded");
    harness
        .broker
        .wait_for_consumer(QUEUE, Duration::from_secs(30))
        .await;
    let ids: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        harness.publish(&created(*id, booking(FROM, TO))).await;
    }
    // The replica holds every booking (its prefetch is 8) and iPassan is holding its calls: each
    // is answered 4 s after it arrived, well after the drain bound that starts now.
    until(
        "the replica to take every booking and call iPassan",
        async || harness.broker.queue_depth(QUEUE).await == 0 && slowed_calls(&harness, SLOWED) > 0,
    )
    .await;

    let (took, output) = stop(first, Duration::from_secs(15)).await;
    assert!(
        took < Duration::from_millis(3_500),
        "the drain bound (1 s) was kept: {took:?}"
    );
    assert!(output.contains("drain timed out"), "{output}");

    // Nothing is lost: the next replica does every booking, once.
    let second = Replica::start(&harness.process_env(), "next");
    let mut done = BTreeSet::new();
    until_done(&mut harness, &mut done, ids.len(), &second).await;
    for id in &ids {
        let visitors = harness.visitors_for(*id).await;
        assert_eq!(visitors.len(), 1, "{id}: one visitor, {visitors:?}");
        assert!(visitors[0].credential.is_some(), "{id}: with its PIN");
    }
}
