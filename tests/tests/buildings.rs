//! Every building its own access-control systems, end to end: two buildings on two iPassan
//! tenants and two Salto servers, connected by an operator through booking-api, with every
//! service running on real RabbitMQ, PostgreSQL and SMTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use platform::bulkhead::ConnectionSettings;
use platform::secrets::SecretsSettings;
use reqwest::Method;
use serde_json::{Value, json};
use tests::fleet::{
    BAY, BAY_CLIENT_SECRET, BAY_MANAGER, BAY_SHIP_KEY, Fleet, FleetOptions, HARBOUR,
    HARBOUR_MANAGER, ZONE, captured_logs,
};
use tests::{SEALING_KEY, assert_contains, days_later, tomorrow_evening};

const NEXT_KEY: &str = "HxwdGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAAA=";

/// Every stored text of a schema's table, for scans.
async fn rows_of(fleet: &Fleet, schema: &str, table: &str) -> String {
    let pool = fleet.db.pool(schema).await;
    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT row_to_json(t)::text FROM {table} t"
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.join("\n")
}

/// Every message published on `connecx.events` so far, as text.
async fn published(fleet: &mut Fleet) -> String {
    let mut all = String::new();
    while let Some(message) = fleet.events.next_message(Duration::from_millis(300)).await {
        all.push_str(&String::from_utf8_lossy(&message.body));
        all.push('\n');
    }
    all
}

#[tokio::test]
async fn each_building_gets_access_from_its_own_systems_and_its_secrets_are_never_in_clear() {
    let mut fleet = Fleet::start(FleetOptions::default()).await;
    fleet.connect_bay().await;
    let (starts, ends) = tomorrow_evening();

    let harbour_visit = fleet.book_visit(HARBOUR, &starts, &ends).await;
    let bay_visit = fleet.book_visit(BAY, &starts, &ends).await;
    for visit in [&harbour_visit, &bay_visit] {
        assert_eq!(visit["access"]["status"], "granted", "{visit}");
    }
    let at_a = fleet.visitors_on(&fleet.ipassan_a, "harbour-site").await;
    let at_b = fleet.visitors_on(&fleet.ipassan_b, "bay-site").await;
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    assert_eq!(
        at_a,
        [(id(&harbour_visit), true)],
        "harbour's visitor on the default tenant"
    );
    assert_eq!(
        at_b,
        [(id(&bay_visit), true)],
        "bay's visitor on its own tenant"
    );

    // The same access level and zone IDs, on two servers: two permissions, no collision.
    let harbour_games = fleet.book_games_room(HARBOUR, &starts, &ends).await;
    let bay_games = fleet.book_games_room(BAY, &starts, &ends).await;
    for booking in [&harbour_games, &bay_games] {
        assert_eq!(booking["access"]["status"], "granted", "{booking}");
    }
    assert_eq!(fleet.zones_on(&fleet.salto_a).await, [ZONE]);
    assert_eq!(fleet.zones_on(&fleet.salto_b).await, [ZONE]);

    // The PIN mail reaches the bay resident as any other.
    fleet
        .mail
        .wait_for_mail_to("bea@bay.example", Duration::from_secs(15))
        .await;

    // The operator's checks reach the bay building's own systems.
    for system in ["ipassan", "salto"] {
        let (status, check) = fleet
            .send(
                Method::POST,
                &format!("/v1/buildings/{BAY}/connections/{system}/check"),
                &fleet.operator(),
                None,
            )
            .await;
        assert_eq!(
            (status, &check["ok"]),
            (200, &json!(true)),
            "{system}: {check}"
        );
    }

    // The secrets: never in an answer, a broker message, a log line or a database row.
    let mut seen = String::new();
    for system in ["ipassan", "salto"] {
        let (_, shown) = fleet
            .send(
                Method::GET,
                &format!("/v1/buildings/{BAY}/connections/{system}"),
                &fleet.operator(),
                None,
            )
            .await;
        seen.push_str(&shown.to_string());
    }
    seen.push_str(&published(&mut fleet).await);
    seen.push_str(&captured_logs());
    for (schema, table) in [
        ("booking", "building_connections"),
        ("booking", "outbox"),
        ("ipassan_sync", "tenants"),
        ("ipassan_sync", "booking_snapshots"),
        ("salto_sync", "salto_servers"),
        ("salto_sync", "booking_snapshots"),
    ] {
        seen.push_str(&rows_of(&fleet, schema, table).await);
    }
    assert!(
        seen.contains("cxs1."),
        "the sealed secrets were among what was scanned"
    );
    for secret in [BAY_CLIENT_SECRET, BAY_SHIP_KEY] {
        assert!(!seen.contains(secret), "{secret} is in clear somewhere");
    }
}

#[tokio::test]
async fn a_building_connected_to_nothing_is_refused_at_once_and_its_managers_hear_once() {
    let fleet = Fleet::start(FleetOptions {
        defaults: false,
        ..FleetOptions::default()
    })
    .await;
    let (starts, ends) = tomorrow_evening();
    let resident = fleet.resident(HARBOUR);
    let visit = json!({"visitor": {"name": "Dee", "email": "dee@visitors.example"},
                       "starts_at": starts, "ends_at": ends, "provide_access": true});
    let games = json!({"facility_id": "games-room", "starts_at": starts, "ends_at": ends});
    for _ in 0..2 {
        for (path, body, code) in [
            ("/v1/visitor-bookings", &visit, "ipassan_not_connected"),
            ("/v1/facility-bookings", &games, "salto_not_connected"),
        ] {
            let (status, refused) = fleet
                .send(Method::POST, path, &resident, Some(body.clone()))
                .await;
            assert_eq!((status, &refused["code"]), (422, &json!(code)), "{path}");
        }
    }
    let mails = fleet.mail.wait_for(2, Duration::from_secs(15)).await;
    assert!(mails.iter().all(|m| m.is_to(HARBOUR_MANAGER)));
    let texts: Vec<&str> = mails.iter().map(|m| m.text_body.as_str()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("PUT /v1/buildings/harbour/connections/ipassan"))
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("PUT /v1/buildings/harbour/connections/salto"))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fleet.mail.mails().len(),
        2,
        "once per missing system and day"
    );

    // Connected by an operator, the same bookings go through.
    let operator = fleet.operator();
    let (status, _) = fleet
        .send(
            Method::PUT,
            &format!("/v1/buildings/{HARBOUR}/connections/ipassan"),
            &operator,
            Some(
                json!({"base_url": fleet.ipassan_a.base_url, "client_id": "connecx",
                        "client_secret": "tenant-a-secret", "site": "harbour-site"}),
            ),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = fleet
        .send(
            Method::PUT,
            &format!("/v1/buildings/{HARBOUR}/connections/salto"),
            &operator,
            Some(json!({"url": fleet.salto_a.url(), "auth_kind": "none"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        fleet.book_visit(HARBOUR, &starts, &ends).await["access"]["status"],
        "granted"
    );
    assert_eq!(
        fleet.book_games_room(HARBOUR, &starts, &ends).await["access"]["status"],
        "granted"
    );
}

#[tokio::test]
async fn moving_a_building_to_other_systems_removes_what_was_granted_where_it_was_granted() {
    let fleet = Fleet::start(FleetOptions::default()).await;
    fleet.connect_bay().await;
    let (starts, ends) = tomorrow_evening();
    let visit = fleet.book_visit(BAY, &starts, &ends).await;
    let games = fleet.book_games_room(BAY, &starts, &ends).await;
    assert_eq!(games["access"]["status"], "granted", "{games}");
    assert_eq!(fleet.zones_on(&fleet.salto_b).await, [ZONE]);

    // Back on the defaults.
    for system in ["ipassan", "salto"] {
        let (status, _) = fleet
            .send(
                Method::DELETE,
                &format!("/v1/buildings/{BAY}/connections/{system}"),
                &fleet.operator(),
                None,
            )
            .await;
        assert_eq!(status, 204);
    }
    let resident = fleet.resident(BAY);
    let visit_path = format!("/v1/visitor-bookings/{}", visit["id"].as_str().unwrap());
    let games_path = format!("/v1/facility-bookings/{}", games["id"].as_str().unwrap());
    for path in [&visit_path, &games_path] {
        let (status, _) = fleet.send(Method::DELETE, path, &resident, None).await;
        assert_eq!(status, 200);
    }
    fleet.access_becomes(&visit_path, BAY, "revoked").await;
    fleet.access_becomes(&games_path, BAY, "revoked").await;
    assert_eq!(
        fleet.visitors_on(&fleet.ipassan_b, "bay-site").await,
        [(visit["id"].as_str().unwrap().to_owned(), false)],
        "the PIN was revoked in the tenant that issued it"
    );
    assert!(
        fleet.zones_on(&fleet.salto_b).await.is_empty(),
        "removed from its own server"
    );
    assert!(
        fleet.zones_on(&fleet.salto_a).await.is_empty(),
        "nothing went to the default"
    );
}

#[tokio::test]
async fn two_buildings_on_one_salto_server_naming_the_same_access_level_share_its_permission() {
    let fleet = Fleet::start(FleetOptions::default()).await;
    // Bay's own connection points at the default server itself.
    fleet.connect_bay_salto(&fleet.salto_a.url(), None).await;
    let (starts, ends) = tomorrow_evening();
    let first = fleet.book_games_room(HARBOUR, &starts, &ends).await;
    assert_eq!(first["access"]["status"], "granted");
    let (later_start, later_end) = (days_later(&starts, 1), days_later(&ends, 1));
    let second = fleet.book_games_room(BAY, &later_start, &later_end).await;
    assert_eq!(second["access"]["status"], "deferred", "{second}");
    assert_eq!(second["access"]["held_by"], first["id"]);
    let mail = fleet
        .mail
        .wait_for_mail_to(BAY_MANAGER, Duration::from_secs(15))
        .await
        .expect("a mail to bay's manager");
    assert_contains(&mail.subject, "Double booking");

    // Harbour's cancellation frees the one permission for bay's booking.
    let (status, _) = fleet
        .send(
            Method::DELETE,
            &format!("/v1/facility-bookings/{}", first["id"].as_str().unwrap()),
            &fleet.resident(HARBOUR),
            None,
        )
        .await;
    assert_eq!(status, 200);
    fleet
        .access_becomes(
            &format!("/v1/facility-bookings/{}", second["id"].as_str().unwrap()),
            BAY,
            "granted",
        )
        .await;
}

#[tokio::test]
async fn a_rotated_sealing_key_keeps_every_building_connected() {
    let mut fleet = Fleet::start(FleetOptions::default()).await;
    fleet.connect_bay().await;
    let (starts, ends) = tomorrow_evening();
    assert_eq!(
        fleet.book_visit(BAY, &starts, &ends).await["access"]["status"],
        "granted"
    );
    let sealed_under = |text: &str| -> Vec<String> {
        text.split("cxs1.")
            .skip(1)
            .map(|rest| rest.split('.').next().unwrap().to_owned())
            .collect()
    };
    let before = sealed_under(&rows_of(&fleet, "ipassan_sync", "tenants").await);

    // The new key seals, the old one still opens; every service re-seals what it holds.
    fleet
        .restart(FleetOptions {
            secrets: SecretsSettings {
                key: Some(NEXT_KEY.into()),
                previous_keys: Some(SEALING_KEY.into()),
            },
            ..FleetOptions::default()
        })
        .await;
    let tomorrow_plus = (days_later(&starts, 1), days_later(&ends, 1));
    assert_eq!(
        fleet
            .book_visit(BAY, &tomorrow_plus.0, &tomorrow_plus.1)
            .await["access"]["status"],
        "granted"
    );
    for (schema, table) in [
        ("booking", "building_connections"),
        ("ipassan_sync", "tenants"),
        ("salto_sync", "salto_servers"),
    ] {
        let now = sealed_under(&rows_of(&fleet, schema, table).await);
        assert!(
            !now.is_empty() && now.iter().all(|id| !before.contains(id)),
            "{schema}.{table}: {now:?}"
        );
    }

    // The old key can go.
    fleet
        .restart(FleetOptions {
            secrets: SecretsSettings {
                key: Some(NEXT_KEY.into()),
                previous_keys: None,
            },
            ..FleetOptions::default()
        })
        .await;
    let later = (days_later(&starts, 2), days_later(&ends, 2));
    assert_eq!(
        fleet.book_visit(BAY, &later.0, &later.1).await["access"]["status"],
        "granted"
    );
    assert_eq!(
        fleet.book_games_room(BAY, &later.0, &later.1).await["access"]["status"],
        "granted"
    );
}

#[tokio::test]
async fn one_buildings_failing_systems_never_hold_up_another_and_its_managers_hear_once_each_way() {
    let fleet = Fleet::start(FleetOptions {
        connections: ConnectionSettings {
            max_in_flight: 2,
            breaker_failures: 2,
            breaker_open_secs: 1,
            outage_alert_secs: 2,
            ..ConnectionSettings::default()
        },
        tiers: "200ms,200ms",
        ..FleetOptions::default()
    })
    .await;
    fleet.connect_bay().await;
    // Bay's Salto server stops answering (its connection's timeout is 2 s); its iPassan fails.
    fleet
        .fail_bays_systems(Duration::from_secs(30), 100_000)
        .await;

    let (starts, ends) = tomorrow_evening();
    let resident = fleet.resident(BAY);
    let mut waiting = Vec::new();
    for n in 0..3 {
        let body = json!({"visitor": {"name": format!("Guest {n}"), "email": format!("guest{n}@bay-visitors.example")},
                          "starts_at": days_later(&starts, n), "ends_at": days_later(&ends, n),
                          "provide_access": true});
        let (status, booking) = fleet
            .send(Method::POST, "/v1/visitor-bookings", &resident, Some(body))
            .await;
        assert_eq!(status, 201);
        waiting.push(format!(
            "/v1/visitor-bookings/{}",
            booking["id"].as_str().unwrap()
        ));
    }
    let games = json!({"facility_id": "games-room", "starts_at": starts, "ends_at": ends});
    let (status, booking) = fleet
        .send(
            Method::POST,
            "/v1/facility-bookings",
            &resident,
            Some(games),
        )
        .await;
    assert_eq!(status, 201);
    waiting.push(format!(
        "/v1/facility-bookings/{}",
        booking["id"].as_str().unwrap()
    ));

    // Meanwhile the harbour building's bookings are granted as usual.
    for n in 0..5 {
        let visit = fleet
            .book_visit(HARBOUR, &days_later(&starts, n), &days_later(&ends, n))
            .await;
        assert_eq!(visit["access"]["status"], "granted", "{visit}");
    }
    let harbour_games = fleet.book_games_room(HARBOUR, &starts, &ends).await;
    assert_eq!(harbour_games["access"]["status"], "granted");

    // Bay's managers hear once per system that it is down, and that nothing is lost.
    let down = fleet
        .mail
        .wait_for_mail_to(BAY_MANAGER, Duration::from_secs(30))
        .await
        .expect("an outage mail");
    assert_contains(&down.subject, "nothing is lost");
    let downs = mails_to(&fleet, BAY_MANAGER, 2).await;
    assert!(
        downs.iter().any(|m| m.subject.contains("iPassan")),
        "{downs:?}"
    );
    assert!(
        downs.iter().any(|m| m.subject.contains("Salto")),
        "{downs:?}"
    );
    for path in &waiting {
        let (_, booking) = fleet.send(Method::GET, path, &resident, None).await;
        assert_eq!(booking["access"]["status"], "pending", "{booking}");
    }

    // Both come back: the waiting bookings complete and the managers hear it, once each.
    fleet.bays_systems_recover().await;
    for path in &waiting {
        fleet.access_becomes(path, BAY, "granted").await;
    }
    let all = mails_to(&fleet, BAY_MANAGER, 4).await;
    let recovered = all
        .iter()
        .filter(|m| m.subject.contains("works again"))
        .count();
    assert_eq!(recovered, 2, "{all:?}");

    // Nobody's messages were dead letters; the harbour manager heard nothing of bay's trouble.
    let dead: Vec<_> = fleet
        .mail
        .mails()
        .into_iter()
        .filter(|m| m.subject.to_lowercase().contains("dead letter") || m.is_to(tests::OPS_EMAIL))
        .collect();
    assert!(dead.is_empty(), "{dead:?}");
    assert!(
        fleet
            .mail
            .mails_to(HARBOUR_MANAGER)
            .iter()
            .all(|m| !m.subject.contains("answer"))
    );
}

/// Waits until `count` mails reached `to`, and returns them.
async fn mails_to(fleet: &Fleet, to: &str, count: usize) -> Vec<testkit::mail_sink::ReceivedMail> {
    tests::eventually(
        &format!("{count} mails to {to}"),
        Duration::from_secs(30),
        || async {
            let mails = fleet.mail.mails_to(to);
            (mails.len() >= count).then_some(mails)
        },
    )
    .await
}
