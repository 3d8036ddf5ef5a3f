//! The simulator over HTTP, as a SHIP client and a test would use it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use salto_sim::RunningSim;
use serde_json::{Value, json};

struct Sim {
    running: RunningSim,
    http: reqwest::Client,
}

impl Sim {
    async fn start() -> Sim {
        let running = RunningSim::start(0).await.unwrap();
        let sim = Sim {
            running,
            http: reqwest::Client::new(),
        };
        sim.control(
            "seed",
            json!({
                "groups": [{"ext_id": "501-56", "name": "Apartment 501"}],
                "zones": [{"ext_id": "GAMES-ROOM", "name": "Games room"}, {"ext_id": "GYM", "name": "Gym"}],
            }),
        )
        .await;
        sim
    }

    fn base(&self) -> String {
        format!("http://{}", self.running.addr)
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/_sim/{path}", self.base()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    async fn state(&self) -> Value {
        self.http
            .get(format!("{}/_sim/state", self.base()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn ship_raw(&self, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut request = self
            .http
            .post(self.running.url())
            .header("Content-Type", salto_sim::SHIP_CONTENT_TYPE)
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    async fn ship(&self, name: &str, params: &str) -> String {
        let (status, body) = self.ship_raw(&call(name, params), &[]).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn opens(&self, at: &str) -> (bool, String) {
        self.control("clock", json!({"now": at})).await;
        let answer = self
            .control("doors/GAMES-ROOM/card", json!({"group": "501-56"}))
            .await;
        (
            answer["opens"].as_bool().unwrap(),
            answer["reason"].as_str().unwrap().to_owned(),
        )
    }
}

fn call(name: &str, params: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<RequestCall><RequestName>{name}</RequestName><Params>{params}</Params></RequestCall>"
    )
}

fn code_of(answer: &str) -> Option<u32> {
    let start = answer.find("<Code>")? + "<Code>".len();
    let end = answer[start..].find("</Code>")? + start;
    answer[start..end].parse().ok()
}

const EVENING: &str = "<SaltoDBTimezoneTable><TimezoneTableID>42</TimezoneTableID><Name>18-24</Name><TimezoneList><Timezone><StartTime>18:00:00</StartTime><EndTime>24:00:00</EndTime><Monday>1</Monday><Tuesday>1</Tuesday><Wednesday>1</Wednesday><Thursday>1</Thursday><Friday>1</Friday><Saturday>1</Saturday><Sunday>1</Sunday></Timezone></TimezoneList></SaltoDBTimezoneTable>";

fn permission(zone: &str, timetable: u32, start: &str, end: &str) -> String {
    format!(
        "<SaltoDB.AccessPermission.Group_Zone><ExtZoneID>{zone}</ExtZoneID><TimezoneTableID>{timetable}</TimezoneTableID><UsePeriod>1</UsePeriod><Period><StartDate>{start}</StartDate><EndDate>{end}</EndDate></Period></SaltoDB.AccessPermission.Group_Zone>"
    )
}

fn update(entries: &[String]) -> String {
    format!(
        "<SaltoDBGroup><ExtGroupID>501-56</ExtGroupID><GroupZoneList>{}</GroupZoneList></SaltoDBGroup>",
        entries.concat()
    )
}

#[tokio::test]
async fn a_permission_written_by_update_opens_the_door_inside_its_hours_on_its_date_only() {
    let sim = Sim::start().await;
    let inserted = sim.ship("SaltoDBTimezoneTable.Insert", EVENING).await;
    assert_eq!(code_of(&inserted), None, "{inserted}");
    let updated = sim
        .ship(
            "SaltoDBGroup.Update",
            &update(&[permission(
                "GAMES-ROOM",
                42,
                "2026-12-01T00:00:00",
                "2026-12-01T24:00:00",
            )]),
        )
        .await;
    assert_eq!(code_of(&updated), None, "{updated}");

    let read = sim
        .ship("SaltoDBGroup.Read", "<ExtGroupID>501-56</ExtGroupID>")
        .await;
    assert!(read.contains("<ExtZoneID>GAMES-ROOM</ExtZoneID>"), "{read}");
    assert!(
        read.contains("<EndDate>2026-12-02T00:00:00</EndDate>"),
        "T24:00:00 is read as the next day's midnight: {read}"
    );

    assert_eq!(
        sim.opens("2026-12-01T19:30:00").await,
        (true, "opens".into())
    );
    assert_eq!(
        sim.opens("2026-12-01T17:00:00").await,
        (false, "outside_timetable".into())
    );
    assert_eq!(
        sim.opens("2026-12-02T19:30:00").await,
        (false, "outside_period".into())
    );
    // Expired permissions are never removed by the server itself.
    let read = sim
        .ship("SaltoDBGroup.Read", "<ExtGroupID>501-56</ExtGroupID>")
        .await;
    assert!(read.contains("GAMES-ROOM"));
}

#[tokio::test]
async fn update_replaces_the_whole_list() {
    let sim = Sim::start().await;
    sim.ship("SaltoDBTimezoneTable.Insert", EVENING).await;
    sim.ship(
        "SaltoDBGroup.Update",
        &update(&[
            permission(
                "GAMES-ROOM",
                42,
                "2026-12-01T00:00:00",
                "2026-12-01T23:59:59",
            ),
            permission("GYM", 42, "2026-12-01T00:00:00", "2026-12-01T23:59:59"),
        ]),
    )
    .await;
    sim.ship(
        "SaltoDBGroup.Update",
        &update(&[permission(
            "GYM",
            42,
            "2026-12-03T00:00:00",
            "2026-12-03T23:59:59",
        )]),
    )
    .await;
    let state = sim.state().await;
    let zones = &state["groups"][0]["zones"];
    assert_eq!(zones.as_array().unwrap().len(), 1, "{state}");
    assert_eq!(zones[0]["zone"], "GYM");
}

#[tokio::test]
async fn the_servers_rules_are_refused_with_their_codes_and_change_nothing() {
    let sim = Sim::start().await;
    sim.ship("SaltoDBTimezoneTable.Insert", EVENING).await;
    let day = ("2026-12-01T00:00:00", "2026-12-01T23:59:59");
    let twice = sim
        .ship(
            "SaltoDBGroup.Update",
            &update(&[
                permission("GAMES-ROOM", 42, day.0, day.1),
                permission(
                    "GAMES-ROOM",
                    42,
                    "2026-12-02T00:00:00",
                    "2026-12-02T23:59:59",
                ),
            ]),
        )
        .await;
    assert_eq!(code_of(&twice), Some(7), "{twice}");
    let unknown_zone = sim
        .ship(
            "SaltoDBGroup.Update",
            &update(&[permission("POOL", 42, day.0, day.1)]),
        )
        .await;
    assert_eq!(code_of(&unknown_zone), Some(11));
    let unknown_timetable = sim
        .ship(
            "SaltoDBGroup.Update",
            &update(&[permission("GYM", 7, day.0, day.1)]),
        )
        .await;
    assert_eq!(code_of(&unknown_timetable), Some(11));
    let unknown_group = sim
        .ship("SaltoDBGroup.Read", "<ExtGroupID>999</ExtGroupID>")
        .await;
    assert_eq!(code_of(&unknown_group), Some(11));
    let backwards = sim
        .ship(
            "SaltoDBGroup.Update",
            &update(&[permission("GYM", 42, day.1, day.0)]),
        )
        .await;
    assert_eq!(code_of(&backwards), Some(12));
    let again = sim.ship("SaltoDBTimezoneTable.Insert", EVENING).await;
    assert_eq!(code_of(&again), Some(10));
    let out_of_range = sim
        .ship(
            "SaltoDBTimezoneTable.Insert",
            &EVENING.replace(">42<", ">1025<"),
        )
        .await;
    assert_eq!(code_of(&out_of_range), Some(12));
    assert_eq!(
        sim.state().await["groups"][0]["zones"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let (status, malformed) = sim.ship_raw("<RequestCall><RequestName>", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(code_of(&malformed), Some(500));
    let unknown = sim.ship("SaltoDBDoor.Open", "").await;
    assert_eq!(code_of(&unknown), Some(501));
}

#[tokio::test]
async fn timetables_are_read_and_deleted_by_id() {
    let sim = Sim::start().await;
    sim.ship("SaltoDBTimezoneTable.Insert", EVENING).await;
    let read = sim
        .ship(
            "SaltoDBTimezoneTable.Read",
            "<TimezoneTableID>42</TimezoneTableID>",
        )
        .await;
    assert!(
        read.contains("<StartTime>18:00:00</StartTime><EndTime>24:00:00</EndTime>"),
        "{read}"
    );
    let deleted = sim
        .ship(
            "SaltoDBTimezoneTable.Delete",
            "<TimezoneTableID>42</TimezoneTableID>",
        )
        .await;
    assert_eq!(code_of(&deleted), None);
    let gone = sim
        .ship(
            "SaltoDBTimezoneTable.Read",
            "<TimezoneTableID>42</TimezoneTableID>",
        )
        .await;
    assert_eq!(code_of(&gone), Some(11));
}

#[tokio::test]
async fn zones_are_listed_in_pages() {
    let sim = Sim::start().await;
    let first = sim
        .ship("SaltoDBZoneList.Read", "<MaxCount>1</MaxCount>")
        .await;
    assert!(
        first.contains("<ExtZoneID>GAMES-ROOM</ExtZoneID>"),
        "{first}"
    );
    assert!(first.contains("<EOF>0</EOF>"), "{first}");
    let second = sim
        .ship(
            "SaltoDBZoneList.Read",
            "<MaxCount>1</MaxCount><StartingFromExtZoneID>GAMES-ROOM</StartingFromExtZoneID>",
        )
        .await;
    assert!(second.contains("<ExtZoneID>GYM</ExtZoneID>"), "{second}");
    assert!(second.contains("<EOF>1</EOF>"), "{second}");
}

#[tokio::test]
async fn a_wrong_key_or_password_is_401() {
    let sim = Sim::start().await;
    let read = call("SaltoDBGroup.Read", "<ExtGroupID>501-56</ExtGroupID>");
    sim.control("seed", json!({"auth": {"kind": "key", "key": "s3cret"}}))
        .await;
    assert_eq!(sim.ship_raw(&read, &[]).await.0, 401);
    assert_eq!(
        sim.ship_raw(&read, &[("Salto-SHIP-Key", "wrong")]).await.0,
        401
    );
    assert_eq!(
        sim.ship_raw(&read, &[("Salto-SHIP-Key", "s3cret")]).await.0,
        200
    );
    sim.control(
        "seed",
        json!({"auth": {"kind": "basic", "username": "ship", "password": "secret"}}),
    )
    .await;
    // ship:secret
    assert_eq!(
        sim.ship_raw(&read, &[("Authorization", "Basic c2hpcDpzZWNyZXQ=")])
            .await
            .0,
        200
    );
    assert_eq!(
        sim.ship_raw(&read, &[("Authorization", "Basic c2hpcDp3cm9uZw==")])
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn injected_faults_answer_as_told_for_as_many_times_as_told() {
    let sim = Sim::start().await;
    let read = "<ExtGroupID>501-56</ExtGroupID>";
    sim.control(
        "faults",
        json!({"match": {"request_name": "SaltoDBGroup.Read"}, "respond": {"code": 1, "message": "busy"}, "times": 2}),
    )
    .await;
    assert_eq!(code_of(&sim.ship("SaltoDBGroup.Read", read).await), Some(1));
    assert_eq!(code_of(&sim.ship("SaltoDBGroup.Read", read).await), Some(1));
    assert_eq!(code_of(&sim.ship("SaltoDBGroup.Read", read).await), None);

    sim.control("faults", json!({"respond": {"http_status": 503}}))
        .await;
    let (status, _) = sim.ship_raw(&call("SaltoDBGroup.Read", read), &[]).await;
    assert_eq!(status, 503);

    sim.control("faults", json!({"respond": {"delay_ms": 300}, "times": 1}))
        .await;
    let started = Instant::now();
    sim.ship("SaltoDBGroup.Read", read).await;
    assert!(started.elapsed() >= Duration::from_millis(300));

    sim.control("faults", json!({"respond": {"code": 4}, "times": 5}))
        .await;
    sim.http
        .delete(format!("{}/_sim/faults", sim.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(&sim.ship("SaltoDBGroup.Read", read).await), None);

    let logged: Value = sim
        .http
        .get(format!("{}/_sim/requests", sim.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(logged.as_array().unwrap().len(), 6);
    assert_eq!(logged[0]["code"], 1);
    assert_eq!(logged[3]["http_status"], 503);
}

#[tokio::test]
async fn a_fault_can_match_the_calls_on_one_access_level_only() {
    let sim = Sim::start().await;
    sim.control(
        "seed",
        json!({"groups": [{"ext_id": "502-57", "name": "Apartment 502"}]}),
    )
    .await;
    sim.control(
        "faults",
        json!({"match": {"request_name": "SaltoDBGroup.Read",
                         "body_contains": "<ExtGroupID>501-56</ExtGroupID>"},
               "respond": {"code": 11, "message": "no such group"}, "times": 100}),
    )
    .await;
    let read_501 = "<ExtGroupID>501-56</ExtGroupID>";
    let read_502 = "<ExtGroupID>502-57</ExtGroupID>";
    assert_eq!(
        code_of(&sim.ship("SaltoDBGroup.Read", read_502).await),
        None
    );
    assert_eq!(
        code_of(&sim.ship("SaltoDBGroup.Read", read_501).await),
        Some(11)
    );
    assert_eq!(
        code_of(&sim.ship("SaltoDBGroup.Read", read_502).await),
        None
    );
    assert_eq!(
        code_of(&sim.ship("SaltoDBGroup.Read", read_501).await),
        Some(11)
    );
}

#[tokio::test]
async fn a_manual_console_change_shows_in_the_group_and_opens_the_door() {
    let sim = Sim::start().await;
    sim.ship("SaltoDBTimezoneTable.Insert", EVENING).await;
    sim.control(
        "manual",
        json!({"group": "501-56", "zone": "GAMES-ROOM", "timetable": 42,
               "period": {"start": "2026-12-05T00:00:00", "end": "2026-12-05T23:59:59"}}),
    )
    .await;
    let read = sim
        .ship("SaltoDBGroup.Read", "<ExtGroupID>501-56</ExtGroupID>")
        .await;
    assert!(
        read.contains("<StartDate>2026-12-05T00:00:00</StartDate>"),
        "{read}"
    );
    assert!(sim.opens("2026-12-05T20:00:00").await.0);

    sim.http
        .post(format!("{}/_sim/reset", sim.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(sim.state().await["groups"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn the_door_clock_follows_the_seeded_time_zone_and_a_bad_zone_is_refused() {
    let sim = Sim::start().await;
    let refused = sim
        .http
        .post(format!("{}/_sim/seed", sim.base()))
        .json(&json!({"timezone": "Mars/Olympus"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    sim.control("seed", json!({"timezone": "Pacific/Kiritimati"}))
        .await;
    let clock = sim.state().await["clock"].as_str().unwrap().to_owned();
    let clock = chrono::NaiveDateTime::parse_from_str(&clock, "%Y-%m-%dT%H:%M:%S%.f").unwrap();
    let utc = chrono::Utc::now().naive_utc();
    // UTC+14 all year.
    let ahead = (clock - utc).num_minutes();
    assert!((13 * 60 + 55..=14 * 60 + 5).contains(&ahead), "{ahead}");
}
