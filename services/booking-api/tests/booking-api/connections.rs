//! Operators connect buildings to their own iPassan tenant and Salto SHIP endpoint: the API, who
//! may use it, secrets never shown or stored in clear, the events the workers learn it from, and
//! bookings refused at once when a building is connected to nothing.

use contracts::Role;
use serde_json::{Value, json};

use crate::support::{
    BUILDING, NEXT_SEALING_KEY, SEALING_KEY, body, captured_logs, problem, settings_for,
    spawn_app_offline, spawn_app_offline_with, spawn_with, visit,
};

const CLIENT_SECRET: &str = "tenant-client-secret-4711";
const SHIP_KEY: &str = "ship-key-0815";

fn ipassan_path() -> String {
    format!("/v1/buildings/{BUILDING}/connections/ipassan")
}

fn salto_path() -> String {
    format!("/v1/buildings/{BUILDING}/connections/salto")
}

fn ipassan_connection() -> Value {
    json!({"base_url": "https://harbour.ipassan.example", "client_id": "connecx-harbour",
           "client_secret": CLIENT_SECRET, "site": "harbour-site"})
}

fn salto_connection() -> Value {
    json!({"url": "https://salto.harbour.example:8090/", "auth_kind": "key", "key": SHIP_KEY,
           "timeout_secs": 7})
}

/// The outbox rows' event types and envelopes, oldest first.
async fn outbox(app: &crate::support::TestApp) -> Vec<(String, Value)> {
    sqlx::query_as("SELECT event_type, envelope FROM outbox ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_operator_connects_a_building_to_its_own_ipassan_and_the_secret_is_never_shown() {
    let app = spawn_app_offline().await;
    let operator = app.operator();

    let response = app
        .put(&ipassan_path(), &operator, ipassan_connection())
        .await;
    assert_eq!(response.status(), 201);
    let created = body(response).await;
    assert_eq!(created["client_secret_set"], true);
    assert_eq!(created["site"], "harbour-site");
    assert_eq!(created["version"], 1);
    assert_eq!(created["updated_by"], "ops-1");
    assert!(created.get("client_secret").is_none(), "{created}");

    let shown = body(app.get(&ipassan_path(), &operator).await).await;
    assert_eq!(shown, created);

    let mut moved = ipassan_connection();
    moved["site"] = json!("harbour-site-2");
    let response = app.put(&ipassan_path(), &operator, moved).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body(response).await["version"], 2);

    let response = app.delete(&ipassan_path(), &operator).await;
    assert_eq!(response.status(), 204);
    let gone = problem(app.get(&ipassan_path(), &operator).await, 404).await;
    assert_eq!(gone["code"], "not_connected");
    assert!(
        gone["detail"].as_str().unwrap().contains("default"),
        "{gone}"
    );
    problem(app.delete(&ipassan_path(), &operator).await, 404).await;

    // Each change is one event for ipassan-sync, in version order, the secret sealed.
    let events = outbox(&app).await;
    let changes: Vec<&Value> = events
        .iter()
        .filter(|(t, _)| t == "ipassan_connection.changed.v1")
        .map(|(_, e)| e)
        .collect();
    assert_eq!(changes.len(), 3);
    assert_eq!(
        changes
            .iter()
            .map(|e| e["version"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(changes[0]["data"]["building_id"], BUILDING);
    assert!(
        changes[0]["data"]["connection"]["client_secret"]
            .as_str()
            .unwrap()
            .starts_with("cxs1.")
    );
    assert!(changes[2]["data"]["connection"].is_null());
    assert_eq!(changes[0]["booking_id"], changes[2]["booking_id"]);

    // Nowhere in clear: the stored row, the events, the logs.
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT COALESCE(settings::text, '') FROM building_connections")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let everything = format!("{stored:?} {events:?} {}", captured_logs());
    assert!(!everything.contains(CLIENT_SECRET), "the secret leaked");
    app.stop().await;
}

#[tokio::test]
async fn a_salto_connection_keeps_its_key_sealed_and_shows_only_that_it_is_set() {
    let app = spawn_app_offline().await;
    let operator = app.operator();
    let response = app.put(&salto_path(), &operator, salto_connection()).await;
    assert_eq!(response.status(), 201);
    let created = body(response).await;
    assert_eq!(
        (
            &created["auth_kind"],
            &created["key_set"],
            &created["password_set"],
            &created["timeout_secs"]
        ),
        (&json!("key"), &json!(true), &json!(false), &json!(7))
    );
    let events = outbox(&app).await;
    let (kind, event) = events.last().unwrap();
    assert_eq!(kind, "salto_connection.changed.v1");
    assert_eq!(
        event["data"]["connection"]["url"],
        "https://salto.harbour.example:8090/"
    );
    let everything = format!("{created} {events:?} {}", captured_logs());
    assert!(!everything.contains(SHIP_KEY), "the key leaked");

    // No secret at all is fine for an endpoint without authentication.
    let open = json!({"url": "http://salto.lan/", "auth_kind": "none"});
    let response = app.put(&salto_path(), &operator, open).await;
    assert_eq!(response.status(), 200);
    let shown = body(response).await;
    assert_eq!(
        (&shown["key_set"], &shown["timeout_secs"]),
        (&json!(false), &json!(10))
    );
    app.stop().await;
}

#[tokio::test]
async fn only_operators_touch_connections_and_operators_touch_nothing_else() {
    let app = spawn_app_offline().await;
    app.seed().await;
    let operator = app.operator();
    for token in [app.manager(), app.resident_ana()] {
        for response in [
            app.get(&ipassan_path(), &token).await,
            app.put(&ipassan_path(), &token, ipassan_connection()).await,
            app.delete(&salto_path(), &token).await,
        ] {
            assert_eq!(problem(response, 403).await["code"], "operator_only");
        }
    }
    let refused = problem(app.get("/v1/visitor-bookings", &operator).await, 403).await;
    assert_eq!(refused["code"], "not_for_operators");
    let refused = problem(
        app.put(
            &format!("/v1/buildings/{BUILDING}"),
            &operator,
            json!({"name": "x", "timezone": "UTC"}),
        )
        .await,
        403,
    )
    .await;
    assert_eq!(refused["code"], "not_for_operators");

    // A manager's building PUT leaves the connection alone.
    assert_eq!(
        app.put(&ipassan_path(), &operator, ipassan_connection())
            .await
            .status(),
        201
    );
    let response = app
        .put(
            &format!("/v1/buildings/{BUILDING}"),
            &app.manager(),
            json!({"name": "Harbour View", "timezone": "Australia/Sydney", "ipassan_site": "other"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let shown = body(app.get(&ipassan_path(), &operator).await).await;
    assert_eq!(
        (&shown["site"], &shown["version"]),
        (&json!("harbour-site"), &json!(1))
    );

    // A token without a building must be an operator's.
    let nowhere = app.token(Role::Manager, "m-9", "", None);
    problem(app.get("/v1/visitor-bookings", &nowhere).await, 401).await;
    app.stop().await;
}

#[tokio::test]
async fn a_put_with_a_bad_url_or_a_missing_secret_names_the_field() {
    let app = spawn_app_offline().await;
    let operator = app.operator();
    let mut no_secret = ipassan_connection();
    no_secret.as_object_mut().unwrap().remove("client_secret");
    let refused = problem(app.put(&ipassan_path(), &operator, no_secret).await, 422).await;
    assert_eq!(refused["field"], "client_secret");

    let mut bad_url = ipassan_connection();
    bad_url["base_url"] = json!("harbour.ipassan.example");
    let refused = problem(app.put(&ipassan_path(), &operator, bad_url).await, 422).await;
    assert_eq!(
        (&refused["field"], &refused["code"]),
        (&json!("base_url"), &json!("invalid_url"))
    );

    let with_credentials = json!({"url": "https://admin:pw@salto.example/", "auth_kind": "none"});
    let refused = problem(
        app.put(&salto_path(), &operator, with_credentials).await,
        422,
    )
    .await;
    assert_eq!(refused["code"], "credentials_in_url");

    let key_missing = json!({"url": "https://salto.example/", "auth_kind": "key"});
    let refused = problem(app.put(&salto_path(), &operator, key_missing).await, 422).await;
    assert_eq!(refused["field"], "key");

    let basic_half =
        json!({"url": "https://salto.example/", "auth_kind": "basic", "username": "u"});
    let refused = problem(app.put(&salto_path(), &operator, basic_half).await, 422).await;
    assert_eq!(refused["field"], "password");
    assert_eq!(
        app.outbox_rows().await,
        0,
        "nothing was stored or published"
    );
    app.stop().await;
}

#[tokio::test]
async fn bookings_carry_the_connection_version_and_the_connections_site() {
    let app = spawn_app_offline().await;
    app.seed().await;
    assert_eq!(
        app.put(&ipassan_path(), &app.operator(), ipassan_connection())
            .await
            .status(),
        201
    );
    let response = app
        .post("/v1/visitor-bookings", &app.resident_ana(), visit(true))
        .await;
    assert_eq!(response.status(), 201);
    let events = outbox(&app).await;
    let (kind, created) = events.last().unwrap();
    assert_eq!(kind, "visitor_booking.created.v1");
    let building = &created["data"]["building"];
    assert_eq!(
        building["ipassan_site"], "harbour-site",
        "the connection's site wins"
    );
    assert_eq!(
        building["connection_versions"],
        json!({"ipassan": 1, "salto": 0})
    );
    app.stop().await;
}

#[tokio::test]
async fn a_building_connected_to_nothing_refuses_access_bookings_and_tells_the_managers_once_a_day()
{
    let app = spawn_app_offline_with(|settings| {
        settings.ipassan.base_url = None;
        settings.salto.url = None;
    })
    .await;
    app.seed().await;
    let ana = app.resident_ana();
    for _ in 0..2 {
        let refused = problem(
            app.post("/v1/visitor-bookings", &ana, visit(true)).await,
            422,
        )
        .await;
        assert_eq!(refused["code"], "ipassan_not_connected");
        assert!(
            refused["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("/v1/buildings/{BUILDING}/connections/ipassan")),
            "{refused}"
        );
    }
    // Without access, iPassan is not needed.
    assert_eq!(
        app.post("/v1/visitor-bookings", &ana, visit(false))
            .await
            .status(),
        201
    );
    let (starts_at, ends_at) = crate::support::tomorrow_evening();
    let facility = json!({"facility_id": "games-room", "starts_at": starts_at, "ends_at": ends_at});
    let refused = problem(
        app.post("/v1/facility-bookings", &ana, facility.clone())
            .await,
        422,
    )
    .await;
    assert_eq!(refused["code"], "salto_not_connected");

    let events = outbox(&app).await;
    let refusals: Vec<(&str, &str)> = events
        .iter()
        .filter(|(t, _)| t.ends_with("_request.refused.v1"))
        .map(|(t, e)| (t.as_str(), e["data"]["failure"]["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        refusals,
        [
            ("visitor_request.refused.v1", "ipassan_not_connected"),
            ("facility_request.refused.v1", "salto_not_connected"),
        ],
        "one mail per missing connection and day, however often it is tried"
    );
    let visit_refusal = &events
        .iter()
        .find(|(t, _)| t == "visitor_request.refused.v1")
        .unwrap()
        .1;
    assert_eq!(visit_refusal["data"]["resident_name"], "Ana Lee");
    assert_eq!(
        visit_refusal["data"]["building"]["manager_emails"],
        json!(["manager@harbour.example"])
    );

    // Connected, the same bookings go through.
    let operator = app.operator();
    app.put(&ipassan_path(), &operator, ipassan_connection())
        .await;
    app.put(&salto_path(), &operator, salto_connection()).await;
    assert_eq!(
        app.post("/v1/visitor-bookings", &ana, visit(true))
            .await
            .status(),
        201
    );
    assert_eq!(
        app.post("/v1/facility-bookings", &ana, facility)
            .await
            .status(),
        201
    );
    app.stop().await;
}

#[tokio::test]
async fn without_a_sealing_key_secrets_are_refused_and_a_keyless_endpoint_is_not() {
    let app = spawn_app_offline_with(|settings| settings.secrets.key = None).await;
    let operator = app.operator();
    let refused = problem(
        app.put(&ipassan_path(), &operator, ipassan_connection())
            .await,
        503,
    )
    .await;
    assert_eq!(refused["code"], "secrets_not_configured");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("CONNECX__SECRETS__KEY")
    );
    let open = json!({"url": "http://salto.lan/", "auth_kind": "none"});
    assert_eq!(app.put(&salto_path(), &operator, open).await.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn secrets_it_cannot_open_stop_the_start_and_a_rotated_key_reseals_them() {
    let db = testkit::TestDb::create().await;
    let nowhere = crate::support::BrokerProxy::start(false).await;
    let settings = || settings_for(db.service_url(booking_api::SCHEMA), nowhere.url("offline"));

    let app = spawn_with(settings(), None).await;
    app.put(&ipassan_path(), &app.operator(), ipassan_connection())
        .await;
    let sealed_before: String =
        sqlx::query_scalar("SELECT settings->>'client_secret' FROM building_connections")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    app.stop().await;

    // Another key alone cannot open them: the service says so, naming the key, and stops.
    let mut wrong = settings();
    wrong.secrets.key = Some(NEXT_SEALING_KEY.into());
    let error = booking_api::Application::build(wrong)
        .await
        .err()
        .expect("the start is refused")
        .to_string();
    assert!(error.contains("CONNECX__SECRETS__KEY"), "{error}");
    assert!(
        error.contains(BUILDING) && error.contains("ipassan"),
        "{error}"
    );
    let mut none = settings();
    none.secrets.key = None;
    assert!(booking_api::Application::build(none).await.is_err());

    // Rotated: the new key seals, the old one still opens, and the row is re-sealed at start.
    let mut rotated = settings();
    rotated.secrets.key = Some(NEXT_SEALING_KEY.into());
    rotated.secrets.previous_keys = Some(SEALING_KEY.into());
    let app = spawn_with(rotated, None).await;
    let sealed_after: String =
        sqlx::query_scalar("SELECT settings->>'client_secret' FROM building_connections")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let key_id = |text: &str| text.split('.').nth(1).unwrap().to_owned();
    assert_ne!(key_id(&sealed_after), key_id(&sealed_before));
    app.stop().await;

    // Now the new key alone is enough.
    let mut new_only = settings();
    new_only.secrets.key = Some(NEXT_SEALING_KEY.into());
    let app = spawn_with(new_only, None).await;
    assert_eq!(
        body(app.get(&ipassan_path(), &app.operator()).await).await["client_secret_set"],
        true
    );
    app.stop().await;
}

/// An iPassan tenant with one site granted to one client.
async fn tenant() -> ipassan_sim::RunningSim {
    let sim = ipassan_sim::spawn().await.unwrap();
    sim.control()
        .seed(&ipassan_sim::Seed {
            sites: std::collections::BTreeMap::from([(
                "harbour-site".to_owned(),
                ipassan_sim::SiteSeed::default(),
            )]),
            clients: vec![ipassan_sim::ClientSeed {
                client_id: "connecx-harbour".into(),
                client_secret: CLIENT_SECRET.into(),
                sites: vec!["harbour-site".into()],
            }],
        })
        .await
        .unwrap();
    sim
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn the_ipassan_check_makes_a_real_call_and_names_what_is_wrong() {
    let app = spawn_app_offline().await;
    let operator = app.operator();
    let check = format!("{}/check", ipassan_path());
    let refused = problem(app.post(&check, &operator, json!({})).await, 404).await;
    assert_eq!(refused["code"], "not_connected");

    let sim = tenant().await;
    let mut connection = ipassan_connection();
    connection["base_url"] = json!(sim.base_url);
    app.put(&ipassan_path(), &operator, connection.clone())
        .await;
    let fine = body(app.post(&check, &operator, json!({})).await).await;
    assert_eq!(
        (&fine["ok"], &fine["problem"]),
        (&json!(true), &Value::Null),
        "{fine}"
    );
    assert!(fine["latency_ms"].is_u64());

    let mut wrong_secret = connection.clone();
    wrong_secret["client_secret"] = json!("not-the-secret");
    app.put(&ipassan_path(), &operator, wrong_secret).await;
    let answer = body(app.post(&check, &operator, json!({})).await).await;
    assert_eq!(
        (&answer["ok"], &answer["problem"]),
        (&json!(false), &json!("credentials_refused")),
        "{answer}"
    );

    let mut other_site = connection.clone();
    other_site["site"] = json!("someone-elses-site");
    app.put(&ipassan_path(), &operator, other_site).await;
    let answer = body(app.post(&check, &operator, json!({})).await).await;
    assert_eq!(answer["problem"], "site_not_found", "{answer}");

    let mut nowhere = connection;
    nowhere["base_url"] = json!(format!("http://127.0.0.1:{}", closed_port()));
    app.put(&ipassan_path(), &operator, nowhere).await;
    let answer = body(app.post(&check, &operator, json!({})).await).await;
    assert_eq!(answer["problem"], "unreachable", "{answer}");
    assert!(!answer.to_string().contains(CLIENT_SECRET));

    let manager = problem(app.post(&check, &app.manager(), json!({})).await, 403).await;
    assert_eq!(manager["code"], "operator_only");
    app.stop().await;
}

#[tokio::test]
async fn the_salto_check_makes_a_real_call_and_names_what_is_wrong() {
    let app = spawn_app_offline().await;
    let operator = app.operator();
    let check = format!("{}/check", salto_path());
    let sim = salto_sim::RunningSim::start(0).await.unwrap();
    let seed = |body: Value| {
        let url = format!("http://{}/_sim/seed", sim.addr);
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
        }
    };
    seed(
        json!({"zones": [{"ext_id": "GAMES-ROOM", "name": "Games room"}],
                "auth": {"kind": "key", "key": SHIP_KEY}}),
    )
    .await;
    let connection =
        json!({"url": sim.url(), "auth_kind": "key", "key": SHIP_KEY, "timeout_secs": 1});
    app.put(&salto_path(), &operator, connection.clone()).await;
    let fine = body(app.post(&check, &operator, json!({})).await).await;
    assert_eq!(fine["ok"], true, "{fine}");

    let mut wrong_key = connection.clone();
    wrong_key["key"] = json!("not-the-key");
    app.put(&salto_path(), &operator, wrong_key).await;
    let answer = body(app.post(&check, &operator, json!({})).await).await;
    assert_eq!(answer["problem"], "credentials_refused", "{answer}");

    // Slower than the connection's one-second timeout.
    app.put(&salto_path(), &operator, connection.clone()).await;
    let fault = reqwest::Client::new()
        .post(format!("http://{}/_sim/faults", sim.addr))
        .json(&json!({"respond": {"delay_ms": 1500}, "times": 1}))
        .send()
        .await
        .unwrap();
    assert!(fault.status().is_success());
    let answer = body(app.post(&check, &operator, json!({})).await).await;
    assert_eq!(answer["problem"], "timeout", "{answer}");

    // Something answers HTTP there, but not SHIP.
    let mut not_ship = connection;
    not_ship["url"] = json!(format!("{}/_sim/state", sim.url().trim_end_matches('/')));
    app.put(&salto_path(), &operator, not_ship).await;
    let answer = body(app.post(&check, &operator, json!({})).await).await;
    assert_eq!(answer["problem"], "protocol_error", "{answer}");

    let nowhere =
        json!({"url": format!("http://127.0.0.1:{}/", closed_port()), "auth_kind": "none"});
    app.put(&salto_path(), &operator, nowhere).await;
    let answer = body(app.post(&check, &operator, json!({})).await).await;
    assert_eq!(answer["problem"], "unreachable", "{answer}");
    app.stop().await;
}
