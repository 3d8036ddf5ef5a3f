//! The SHIP client against salto-sim over HTTP: each call, each authentication mode, and the
//! classification of what goes wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::NaiveDate;
use salto_ship::{
    Group, Interval, Period, Remedy, ShipAuth, ShipClient, ShipError, ShipSettings, Timetable,
    ZonePermission,
};
use salto_sim::RunningSim;
use serde_json::{Value, json};

async fn sim() -> RunningSim {
    let sim = RunningSim::start(0).await.unwrap();
    let zones: Vec<Value> = (0..250)
        .map(|n| json!({"ext_id": format!("Z{n:03}"), "name": format!("Zone {n}")}))
        .collect();
    control(
        &sim,
        "seed",
        json!({"groups": [{"ext_id": "501-56", "name": "Apartment 501"}], "zones": zones}),
    )
    .await;
    sim
}

async fn control(sim: &RunningSim, path: &str, body: Value) {
    let status = reqwest::Client::new()
        .post(format!("http://{}/_sim/{path}", sim.addr))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success());
}

/// How the tests authenticate: the simulator's key, or its Basic credentials.
#[derive(Clone, Copy)]
enum AuthKind {
    None,
    Key,
    Basic,
}

fn settings(sim: &RunningSim, auth_kind: AuthKind) -> ShipSettings {
    ShipSettings {
        url: sim.url(),
        auth: match auth_kind {
            AuthKind::None => ShipAuth::None,
            AuthKind::Key => ShipAuth::Key("the-key".into()),
            AuthKind::Basic => ShipAuth::Basic {
                username: "ship".into(),
                password: "secret".into(),
            },
        },
        timeout: Duration::from_secs(1),
    }
}

fn client(sim: &RunningSim, auth_kind: AuthKind) -> ShipClient {
    ShipClient::new(&settings(sim, auth_kind)).unwrap()
}

#[tokio::test]
async fn timetables_and_group_permissions_round_trip() {
    let sim = sim().await;
    let ship = client(&sim, AuthKind::None);
    let evening = Timetable {
        id: 42,
        name: "connecX 18:00:00-24:00:00".into(),
        intervals: vec![Interval {
            start: 18 * 3600,
            end: 24 * 3600,
            days: [true; 7],
        }],
    };
    ship.insert_timetable(&evening).await.unwrap();
    assert_eq!(ship.read_timetable(42).await.unwrap(), evening);
    let again = ship.insert_timetable(&evening).await.unwrap_err();
    assert_eq!(again.code(), Some(10));

    let permission = ZonePermission {
        zone: "Z007".into(),
        timetable: Some(42),
        period: Some(Period::whole_day(
            NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
        )),
    };
    let mut group = ship.read_group("501-56").await.unwrap();
    assert_eq!(group.name.as_deref(), Some("Apartment 501"));
    assert!(group.permissions.is_empty());
    group.permissions = vec![permission.clone()];
    ship.update_group(&group).await.unwrap();
    assert_eq!(
        ship.read_group("501-56").await.unwrap().permissions,
        vec![permission.clone()]
    );

    let twice = Group {
        permissions: vec![permission.clone(), permission],
        ..group.clone()
    };
    let refused = ship.update_group(&twice).await.unwrap_err();
    assert_eq!(refused.code(), Some(7));
    assert_eq!(refused.remedy(), Remedy::Permanent);

    group.permissions.clear();
    ship.update_group(&group).await.unwrap();
    assert!(
        ship.read_group("501-56")
            .await
            .unwrap()
            .permissions
            .is_empty()
    );
    ship.delete_timetable(42).await.unwrap();

    let unknown = ship.read_group("999").await.unwrap_err();
    assert_eq!(unknown.remedy(), Remedy::NeedsManager);
}

#[tokio::test]
async fn every_page_of_zones_is_read() {
    let sim = sim().await;
    let zones = client(&sim, AuthKind::None).read_zones().await.unwrap();
    assert_eq!(zones.len(), 250);
    assert_eq!(zones[0].ext_id, "Z000");
    assert_eq!(zones[249].ext_id, "Z249");
}

#[tokio::test]
async fn each_authentication_mode_is_sent_and_a_wrong_secret_is_permanent() {
    let sim = sim().await;
    control(
        &sim,
        "seed",
        json!({"auth": {"kind": "key", "key": "the-key"}}),
    )
    .await;
    client(&sim, AuthKind::Key)
        .read_group("501-56")
        .await
        .unwrap();
    let refused = client(&sim, AuthKind::None)
        .read_group("501-56")
        .await
        .unwrap_err();
    assert_eq!(
        refused,
        ShipError::Http {
            request: "SaltoDBGroup.Read",
            status: 401
        }
    );
    assert_eq!(refused.remedy(), Remedy::Permanent);

    control(
        &sim,
        "seed",
        json!({"auth": {"kind": "basic", "username": "ship", "password": "secret"}}),
    )
    .await;
    client(&sim, AuthKind::Basic)
        .read_group("501-56")
        .await
        .unwrap();
    assert!(
        client(&sim, AuthKind::Key)
            .read_group("501-56")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn busy_unavailable_and_slow_answers_are_transient() {
    let sim = sim().await;
    let ship = client(&sim, AuthKind::None);
    for respond in [
        json!({"code": 1}),
        json!({"code": 4}),
        json!({"code": 101}),
        json!({"http_status": 503}),
        json!({"delay_ms": 1500}),
    ] {
        control(&sim, "faults", json!({"respond": respond, "times": 1})).await;
        let error = ship.read_group("501-56").await.unwrap_err();
        assert_eq!(error.remedy(), Remedy::Transient, "{respond}: {error}");
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    ship.read_group("501-56").await.unwrap();

    let down = ShipClient::new(&ShipSettings {
        url: "http://127.0.0.1:9/".into(),
        ..settings(&sim, AuthKind::None)
    })
    .unwrap();
    assert_eq!(
        down.read_group("501-56").await.unwrap_err().remedy(),
        Remedy::Transient
    );
}

/// A valid `SaltoDBGroup.Read` answer, as the simulator gives it.
const GOOD_ANSWER: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<RequestResponse><RequestName>SaltoDBGroup.Read</RequestName><Params><SaltoDBGroup><ExtGroupID>501-56</ExtGroupID><Name>Apartment 501</Name><GroupZoneList><SaltoDB.AccessPermission.Group_Zone><ExtZoneID>GAMES-ROOM</ExtZoneID><TimezoneTableID>42</TimezoneTableID><UsePeriod>1</UsePeriod><Period><StartDate>2026-12-01T00:00:00</StartDate><EndDate>2026-12-01T23:59:59</EndDate></Period></SaltoDB.AccessPermission.Group_Zone></GroupZoneList></SaltoDBGroup></Params></RequestResponse>";

#[tokio::test]
async fn a_malformed_or_huge_answer_is_a_protocol_error_never_a_panic() {
    let sim = sim().await;
    let ship = client(&sim, AuthKind::None);
    let cut = |at: usize| GOOD_ANSWER[..at].to_owned();
    let answers = [
        json!({"body": cut(GOOD_ANSWER.len() / 2)}),
        json!({"body": cut(40)}),
        json!({"body": GOOD_ANSWER.replace("<TimezoneTableID>42", "<TimezoneTableID>forty-two")}),
        json!({"body": GOOD_ANSWER.replace("<UsePeriod>1", "<UsePeriod>yes")}),
        json!({"body": GOOD_ANSWER.replace("2026-12-01T00:00:00", "the first of December")}),
        json!({"body": "not xml at all"}),
        json!({"body": ""}),
        // 2 MiB of one answer's zones over and over.
        json!({"body": "<RequestResponse>", "repeat": 1}),
        json!({"body": "<Params>0123456789abcdef", "repeat": 90_000}),
    ];
    for respond in answers {
        control(&sim, "faults", json!({"respond": respond, "times": 1})).await;
        let outcome = ship.read_group("501-56").await;
        // Whatever it is, it came back (no panic): an error for a person, never a retry loop.
        if let Err(error) = &outcome {
            assert_eq!(error.remedy(), Remedy::Permanent, "{respond}: {error}");
        }
    }
    control(
        &sim,
        "faults",
        json!({"respond": {"body": "<x>", "repeat": 400_000}, "times": 1}),
    )
    .await;
    let huge = ship.read_group("501-56").await.unwrap_err();
    assert!(huge.to_string().contains("larger than"), "{huge}");
    ship.read_group("501-56").await.unwrap();
}
