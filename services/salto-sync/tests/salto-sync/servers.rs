//! Salto state per server: each building's permissions on its own SHIP endpoint (or the
//! default), two buildings on one server sharing its one-permission rule, grants removed on the
//! server they were made on, buildings connected to nothing failing with a reason, unused
//! timetables deleted so the pool never runs dry, and a full pool waiting with one alert.

use std::time::Duration;

use contracts::{
    AccessSystem, Envelope, Event, SaltoAuthKind, SaltoConnection, SaltoConnectionChange,
    connection_subject, sealed_fields,
};
use platform::secrets::SecretsSettings;
use salto_sim::RunningSim;
use serde_json::{Value, json};

use crate::support::{APARTMENT, Booking, GAMES, GYM, Harness, SEALING_KEY, result_of, until};

const BAY: &str = "bay";
const BAY_KEY: &str = "bay-ship-key";
const DAY: &str = "2026-12-01";

async fn control(sim: &RunningSim, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("http://{}/_sim/{path}", sim.addr))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{path}");
    response.json().await.unwrap_or(Value::Null)
}

async fn state(sim: &RunningSim) -> Value {
    reqwest::get(format!("http://{}/_sim/state", sim.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The zones a group holds on `sim`.
async fn zones_of(sim: &RunningSim, group: &str) -> Vec<String> {
    let state = state(sim).await;
    state["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["ext_id"] == group)
        .map(|g| {
            g["zones"]
                .as_array()
                .unwrap()
                .iter()
                .map(|z| z["zone"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The bay building's own Salto server: the same access levels and zones, a SHIP key.
async fn bay_server() -> RunningSim {
    let sim = RunningSim::start(0).await.unwrap();
    control(
        &sim,
        "seed",
        json!({"timezone": "Australia/Sydney",
               "groups": [{"ext_id": APARTMENT, "name": "Bay 501"}, {"ext_id": "502-57", "name": "Bay 502"}],
               "zones": [{"ext_id": GAMES, "name": "Bay games room"}, {"ext_id": GYM, "name": "Bay gym"}],
               "auth": {"kind": "key", "key": BAY_KEY}}),
    )
    .await;
    sim
}

/// The bay building's Salto connection at `version`: `server` (with its key), or the default.
fn connection(version: i64, server: Option<&RunningSim>) -> Envelope {
    let sealer = SecretsSettings {
        key: Some(SEALING_KEY.into()),
        previous_keys: None,
    }
    .sealer()
    .unwrap()
    .unwrap();
    Envelope::new(
        connection_subject(BAY, AccessSystem::Salto),
        version,
        Event::SaltoConnectionChanged(SaltoConnectionChange {
            building_id: BAY.into(),
            connection: server.map(|sim| SaltoConnection {
                url: sim.url(),
                auth_kind: SaltoAuthKind::Key,
                username: None,
                password: None,
                key: Some(sealer.seal(BAY_KEY, sealed_fields::SALTO_KEY)),
                timeout_secs: 5,
            }),
        }),
    )
}

/// The bay building on the default server itself (its own connection, the same URL).
fn connection_to_default(version: i64, default: &RunningSim) -> Envelope {
    Envelope::new(
        connection_subject(BAY, AccessSystem::Salto),
        version,
        Event::SaltoConnectionChanged(SaltoConnectionChange {
            building_id: BAY.into(),
            connection: Some(SaltoConnection {
                url: default.url(),
                auth_kind: SaltoAuthKind::None,
                username: None,
                password: None,
                key: None,
                timeout_secs: 5,
            }),
        }),
    )
}

#[tokio::test]
async fn each_building_gets_its_permissions_on_its_own_server() {
    let mut h = Harness::start().await;
    let bay = bay_server().await;
    h.publish(&connection(1, Some(&bay))).await;

    let at_bay = Booking::games(DAY).of_building(BAY, 1);
    let granted = h.publish_for_result(&at_bay.created()).await;
    assert_eq!(granted.routing_key(), "facility_access.granted.v1");
    assert_eq!(zones_of(&bay, APARTMENT).await, [GAMES]);
    assert!(
        zones_of(&h.sim, APARTMENT).await.is_empty(),
        "nothing on the default server"
    );

    // Same access level, zone and day on the default server: another server, no collision.
    let at_harbour = Booking::games(DAY);
    let granted = h.publish_for_result(&at_harbour.created()).await;
    assert_eq!(granted.routing_key(), "facility_access.granted.v1");
    assert_eq!(granted.booking_id, at_harbour.id);
    assert_eq!(zones_of(&h.sim, APARTMENT).await, [GAMES]);
}

#[tokio::test]
async fn two_buildings_on_one_server_naming_the_same_access_level_share_its_one_permission() {
    let mut h = Harness::start().await;
    h.publish(&connection_to_default(1, &h.sim)).await;
    let mut first = Booking::games(DAY);
    assert_eq!(
        h.publish_for_result(&first.created()).await.routing_key(),
        "facility_access.granted.v1"
    );

    // The bay building's booking of the same access level and zone is a double booking there.
    let second = Booking::games(DAY)
        .of_building(BAY, 1)
        .hours("09:00:00", "10:00:00");
    let deferred = h.publish_for_result(&second.created()).await;
    assert_eq!(deferred.routing_key(), "facility_access.deferred.v1");
    assert_eq!(result_of(&deferred).held_by, Some(first.id));

    // The first one's cancellation gives the slot to the other building's booking.
    h.publish(&first.cancelled()).await;
    h.results_including(&[
        ("facility_access.revoked.v1", first.id),
        ("facility_access.granted.v1", second.id),
    ])
    .await;
    assert_eq!(zones_of(&h.sim, APARTMENT).await, [GAMES]);
}

#[tokio::test]
async fn a_grant_is_moved_off_the_server_it_was_made_on_when_its_building_moves() {
    let mut h = Harness::start().await;
    let bay = bay_server().await;
    h.publish(&connection(1, Some(&bay))).await;
    let mut booking = Booking::games(DAY).of_building(BAY, 1);
    assert_eq!(
        h.publish_for_result(&booking.created()).await.routing_key(),
        "facility_access.granted.v1"
    );
    assert_eq!(zones_of(&bay, APARTMENT).await, [GAMES]);

    // The operator puts the building back on the default; then the booking is moved.
    h.publish(&connection(2, None)).await;
    h.publish(&booking.moved_to("19:00:00", "21:00:00", 2))
        .await;
    let granted = h.next_result(15).await;
    assert_eq!(granted.routing_key(), "facility_access.granted.v1");
    assert_eq!(granted.version, 2);
    assert!(
        zones_of(&bay, APARTMENT).await.is_empty(),
        "removed where it was made"
    );
    assert_eq!(zones_of(&h.sim, APARTMENT).await, [GAMES]);

    assert_eq!(
        h.publish_for_result(&booking.cancelled_under(2))
            .await
            .routing_key(),
        "facility_access.revoked.v1"
    );
    assert!(zones_of(&h.sim, APARTMENT).await.is_empty());
}

#[tokio::test]
async fn a_booking_waits_for_the_connection_version_it_was_made_under() {
    let mut h = Harness::start().await;
    let bay = bay_server().await;
    let booking = Booking::games(DAY).of_building(BAY, 1);
    h.publish(&booking.created()).await;
    // The booking is sent back to wait for its connection before the connection comes; nothing
    // may go to the default server meanwhile.
    until("the booking to wait for its connection", async || {
        h.messages_retried().await >= 1.0
    })
    .await;
    h.publish(&connection(1, Some(&bay))).await;
    assert_eq!(
        h.next_result(15).await.routing_key(),
        "facility_access.granted.v1"
    );
    assert_eq!(zones_of(&bay, APARTMENT).await, [GAMES]);
    assert!(zones_of(&h.sim, APARTMENT).await.is_empty());
}

#[tokio::test]
async fn without_a_default_a_building_with_no_server_of_its_own_fails_with_a_reason() {
    let mut h = Harness::start_without_default().await;
    let failed = h.publish_for_result(&Booking::games(DAY).created()).await;
    assert_eq!(failed.routing_key(), "facility_access.failed.v1");
    let failure = result_of(&failed).failure.clone().unwrap();
    assert_eq!(failure.code, "salto_not_connected");
    assert!(failure.needs_manager);
    assert_eq!(h.requests_named("SaltoDBGroup.Read").await, 0);
}

/// `HH:MM:SS` of `seconds` after midnight.
fn clock(seconds: u32) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[tokio::test]
async fn two_thousand_reschedules_of_one_booking_never_run_the_timetable_pool_dry() {
    let mut h = Harness::start().await;
    let mut booking = Booking::games(DAY);
    assert_eq!(
        h.publish_for_result(&booking.created()).await.routing_key(),
        "facility_access.granted.v1"
    );
    // 2,000 different hours: each needs a timetable of its own, twice the server's 1,024 IDs.
    // One at a time, each acted on (published together, most would be skipped as stale).
    let publisher = platform::amqp::Publisher::new(&h.settings().shared.amqp, "test");
    for n in 1..=2000u32 {
        let from = 6 * 3600 + n * 20;
        let envelope = booking.moved_to(&clock(from), &clock(from + 3600), 0);
        publisher.publish_event(&envelope).await.unwrap();
        let result = h.next_result(30).await;
        assert_eq!(
            (result.routing_key(), result.version),
            ("facility_access.granted.v1", booking.version),
            "{:?}",
            result_of(&result).failure
        );
    }
    assert!(
        h.requests_named("SaltoDBTimezoneTable.Insert").await > 1024,
        "more timetables were made than the server has IDs"
    );
    let permissions = h.permissions(APARTMENT).await;
    assert_eq!(permissions.len(), 1);
    // The sweeper catches up with the last reschedules shortly after.
    until("at most two timetables left in Salto", async || {
        state(&h.sim).await["timetables"].as_array().unwrap().len() <= 2
    })
    .await;
}

#[tokio::test]
async fn a_full_timetable_pool_makes_bookings_wait_and_tells_ops_once() {
    let mut h = Harness::start().await;
    let mut alerts = h.broker.tap("salto_server.#").await;
    // Someone else's timetables hold every ID but 1.
    let foreign: Vec<Value> = (2..=1024)
        .map(|id| {
            json!({"id": id, "name": format!("console {id}"),
                          "intervals": [{"start": "07:00:00", "end": "08:00:00"}]})
        })
        .collect();
    for chunk in foreign.chunks(200) {
        h.control("seed", json!({"timetables": chunk})).await;
    }
    let mut evening = Booking::games(DAY);
    h.publish(&evening.created()).await;
    assert_eq!(
        h.next_result(30).await.routing_key(),
        "facility_access.granted.v1"
    );

    // Other hours need another timetable: there is none. The booking waits, ops hear once.
    let morning = Booking::games("2026-12-02")
        .zone(GYM)
        .hours("09:00:00", "10:00:00");
    h.publish(&morning.created()).await;
    let alert = alerts
        .next(Duration::from_secs(30))
        .await
        .expect("an alert to ops");
    let Event::TimetablesExhausted(exhausted) = &alert.event else {
        panic!("not an exhaustion alert: {}", alert.routing_key());
    };
    assert_eq!(
        exhausted.server,
        salto_sync::servers::server_key(&h.sim.url())
    );
    assert_eq!(
        (exhausted.held_by_connecx, exhausted.held_by_others),
        (1, 1023)
    );
    assert!(
        h.tap.next(Duration::from_millis(800)).await.is_none(),
        "it waits"
    );

    // The evening booking is cancelled: its timetable is deleted, and the morning one gets it.
    h.publish(&evening.cancelled()).await;
    h.results_including(&[
        ("facility_access.revoked.v1", evening.id),
        ("facility_access.granted.v1", morning.id),
    ])
    .await;
    assert!(
        alerts.next(Duration::from_millis(300)).await.is_none(),
        "one alert per exhaustion, not one per retry"
    );
}

/// One booking for each (access level, zone) the simulators know: none waits for another.
fn slots() -> impl Iterator<Item = Booking> {
    [
        (APARTMENT, GAMES),
        (APARTMENT, GYM),
        ("502-57", GAMES),
        ("502-57", GYM),
    ]
    .into_iter()
    .map(|(level, zone)| {
        let mut booking = Booking::games(DAY).zone(zone);
        booking.access_level = level.into();
        booking
    })
}

/// A burst of bookings for one server that answers flows at the server's pace: a message that
/// finds the server's slots taken waits a moment for one, not in the retry tiers (where a
/// backlog for one server once drained at one or two bookings a second).
#[tokio::test]
async fn a_burst_for_one_server_waits_for_its_slots_not_in_the_retry_tiers() {
    const BURST: usize = 40;
    let mut h = Harness::start_replicas(0).await;
    h.connections = platform::bulkhead::ConnectionSettings {
        max_in_flight: 1,
        slot_wait_ms: 10_000,
        ..platform::bulkhead::ConnectionSettings::default()
    };
    let levels: Vec<String> = (0..BURST).map(|i| format!("burst-{i}")).collect();
    let groups: Vec<Value> = levels
        .iter()
        .map(|level| json!({"ext_id": level, "name": level}))
        .collect();
    h.control("seed", json!({"groups": groups})).await;
    h.start_replica().await;
    let bookings: Vec<Booking> = levels
        .iter()
        .map(|level| {
            let mut booking = Booking::games(DAY);
            booking.access_level = level.clone();
            booking
        })
        .collect();
    for booking in &bookings {
        h.publish(&booking.created()).await;
    }
    h.granted(BURST).await;
    assert_eq!(
        h.messages_waited().await,
        0.0,
        "no booking of the burst waited in the retry tiers"
    );
}

#[tokio::test]
async fn a_hanging_server_waits_behind_its_breaker_while_the_other_server_goes_on() {
    let mut h = Harness::start_replicas(0).await;
    h.connections = platform::bulkhead::ConnectionSettings {
        max_in_flight: 2,
        breaker_failures: 2,
        breaker_open_secs: 1,
        outage_alert_secs: 2,
        ..platform::bulkhead::ConnectionSettings::default()
    };
    h.start_replica().await;
    let mut health = h.broker.tap("connection.#").await;
    let bay = bay_server().await;
    h.publish(&connection(1, Some(&bay))).await;
    // The bay server stops answering within the connection's timeout.
    control(
        &bay,
        "faults",
        json!({"respond": {"delay_ms": 8000}, "times": 100000}),
    )
    .await;
    let at_bay: Vec<Booking> = slots().map(|b| b.of_building(BAY, 1)).collect();
    for booking in &at_bay {
        h.publish(&booking.created()).await;
    }
    // The harbour building's bookings on the default server are granted meanwhile.
    let at_harbour: Vec<Booking> = slots().collect();
    for booking in &at_harbour {
        h.publish(&booking.created()).await;
    }
    let granted = h.granted(at_harbour.len()).await;
    assert!(
        granted
            .iter()
            .all(|id| at_harbour.iter().any(|b| b.id == *id))
    );

    let down = health
        .next(Duration::from_secs(20))
        .await
        .expect("an outage alert");
    let Event::ConnectionDown(outage) = &down.event else {
        panic!("expected connection.down, got {}", down.routing_key());
    };
    assert_eq!(outage.building.id, BAY);
    assert_eq!(outage.system, AccessSystem::Salto);

    // Back: the bay bookings complete, one recovery notice.
    let cleared = reqwest::Client::new()
        .delete(format!("http://{}/_sim/faults", bay.addr))
        .send()
        .await
        .unwrap();
    assert!(cleared.status().is_success());
    h.granted(at_bay.len()).await;
    let up = health
        .next(Duration::from_secs(20))
        .await
        .expect("a recovery notice");
    assert_eq!(up.routing_key(), "connection.recovered.v1");
}
