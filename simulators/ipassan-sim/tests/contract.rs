//! The simulator follows `docs/contracts/ipassan.md`, checked over HTTP as any client would see it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use ipassan_sim::model::{Fault, FaultMatch, FaultResponse};
use ipassan_sim::{ClientSeed, Person, RunningSim, Seed, SiteSeed};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SITE: &str = "site-1";

struct Sim {
    sim: RunningSim,
    http: reqwest::Client,
}

fn person(id: &str, kind: u8, email: &str, profile: Option<&str>) -> Person {
    Person {
        id: id.into(),
        kind,
        first_name: "Ana".into(),
        last_name: "Lee".into(),
        email: email.into(),
        access_profile_id: profile.map(String::from),
    }
}

async fn start() -> Sim {
    let sim = ipassan_sim::spawn().await.unwrap();
    let seed = Seed {
        sites: BTreeMap::from([
            (
                SITE.to_owned(),
                SiteSeed {
                    timezone: Some("Australia/Sydney".into()),
                    persons: vec![
                        person("p-ana", 1, "Ana@Example.com", Some("ap-7")),
                        person("p-noprofile", 1, "np@example.com", None),
                        person("p-visitor", 3, "v@example.com", Some("ap-7")),
                    ],
                    profiles: BTreeMap::from([(
                        "ap-7".to_owned(),
                        vec!["lobby".to_owned(), "lift".to_owned()],
                    )]),
                },
            ),
            ("other-site".to_owned(), SiteSeed::default()),
        ]),
        clients: vec![ClientSeed {
            client_id: "connecx".into(),
            client_secret: "s3cret".into(),
            sites: vec![SITE.into()],
        }],
    };
    sim.control().seed(&seed).await.unwrap();
    Sim {
        sim,
        http: reqwest::Client::new(),
    }
}

impl Sim {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url)
    }

    async fn token(&self) -> String {
        let (status, body) = self
            .form(
                Method::POST,
                "/api/v1/token",
                None,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", "connecx"),
                    ("client_secret", "s3cret"),
                    ("scope", "all"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn form(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        fields: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path)).form(fields);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.unwrap()).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.unwrap()).await
    }

    async fn delete(&self, path: &str, token: &str) -> StatusCode {
        self.http
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn create(
        &self,
        token: &str,
        external_ref: &str,
        from: &str,
        to: &str,
    ) -> (StatusCode, Value) {
        self.form(
            Method::POST,
            &format!("/api/v1/access/site/{SITE}/visitor"),
            Some(token),
            &visitor_fields("p-ana", external_ref, from, to),
        )
        .await
    }
}

fn visitor_fields<'a>(
    visitee: &'a str,
    external_ref: &'a str,
    from: &'a str,
    to: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("visiteeId", visitee),
        ("firstName", "Bo"),
        ("lastName", "Tan"),
        ("email", "bo@example.com"),
        ("validFrom", from),
        ("validTo", to),
        ("externalRef", external_ref),
    ]
}

async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    if status != StatusCode::NO_CONTENT {
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(content_type, "application/json; charset=utf-8");
    }
    (status, response.json().await.unwrap_or(Value::Null))
}

const FROM: &str = "2026-12-01T18:00:00";
const TO: &str = "2026-12-01T22:00:00";

#[tokio::test]
async fn a_token_needs_the_right_client_credentials() {
    let sim = start().await;
    let (status, body) = sim
        .form(
            Method::POST,
            "/api/v1/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "connecx"),
                ("client_secret", "s3cret"),
                ("scope", "all"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);

    let (status, body) = sim
        .form(
            Method::POST,
            "/api/v1/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "connecx"),
                ("client_secret", "wrong"),
                ("scope", "all"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_token");

    let (status, body) = sim
        .form(
            Method::POST,
            "/api/v1/token",
            None,
            &[
                ("grant_type", "password"),
                ("client_id", "connecx"),
                ("client_secret", "s3cret"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn a_missing_unknown_or_expired_token_is_401_and_another_site_is_403() {
    let sim = start().await;
    let path = format!("/api/v1/access/site/{SITE}/person/p-ana");
    assert_eq!(sim.get(&path, None).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = sim.get(&path, Some("made-up")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );

    let token = sim.token().await;
    assert_eq!(sim.get(&path, Some(&token)).await.0, StatusCode::OK);
    let (status, body) = sim
        .get("/api/v1/access/site/other-site/person/p-ana", Some(&token))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "Access Denied");

    sim.sim.control().expire_tokens().await.unwrap();
    let (status, body) = sim.get(&path, Some(&token)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );

    // A short lifetime is announced in `expires_in` and kept.
    sim.sim.control().set_token_lifetime(1).await.unwrap();
    let short = sim.token().await;
    assert_eq!(sim.get(&path, Some(&short)).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        sim.get(&path, Some(&short)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn persons_are_found_by_id_and_by_email_regardless_of_case() {
    let sim = start().await;
    let token = sim.token().await;
    let (status, ana) = sim
        .get(
            &format!("/api/v1/access/site/{SITE}/person/p-ana"),
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ana,
        json!({"id": "p-ana", "type": 1, "firstName": "Ana", "lastName": "Lee",
               "email": "Ana@Example.com", "accessProfileId": "ap-7"})
    );
    let (status, body) = sim
        .get(
            &format!("/api/v1/access/site/{SITE}/person/p-nobody"),
            Some(&token),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (_, found) = sim
        .get(
            &format!("/api/v1/access/site/{SITE}/person?email=ana%40example.COM"),
            Some(&token),
        )
        .await;
    assert_eq!(found, json!([ana]));
    let (_, none) = sim
        .get(
            &format!("/api/v1/access/site/{SITE}/person?email=ana%40example.org"),
            Some(&token),
        )
        .await;
    assert_eq!(none, json!([]));
}

#[tokio::test]
async fn a_visitor_inherits_the_visitees_profile_with_a_pin_and_create_is_idempotent() {
    let sim = start().await;
    let token = sim.token().await;
    let (status, visitor) = sim.create(&token, "booking-1", FROM, TO).await;
    assert_eq!(status, StatusCode::CREATED, "{visitor}");
    assert_eq!(visitor["visiteeId"], "p-ana");
    assert_eq!(visitor["accessProfileId"], "ap-7");
    assert_eq!(visitor["validFrom"], FROM);
    assert_eq!(visitor["validTo"], TO);
    assert_eq!(visitor["externalRef"], "booking-1");
    assert_eq!(visitor["credential"]["type"], "pin");
    let pin = visitor["credential"]["pin"].as_str().unwrap();
    assert!(
        pin.len() == 6 && pin.chars().all(|c| c.is_ascii_digit()),
        "{pin}"
    );

    let (status, again) = sim.create(&token, "booking-1", FROM, TO).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, visitor);

    let id = visitor["id"].as_str().unwrap();
    let (status, by_id) = sim
        .get(
            &format!("/api/v1/access/site/{SITE}/visitor/{id}"),
            Some(&token),
        )
        .await;
    assert_eq!((status, &by_id), (StatusCode::OK, &visitor));
    let (_, by_ref) = sim
        .get(
            &format!("/api/v1/access/site/{SITE}/visitor?externalRef=booking-1"),
            Some(&token),
        )
        .await;
    assert_eq!(by_ref, json!([visitor]));
    let (_, none) = sim
        .get(
            &format!("/api/v1/access/site/{SITE}/visitor?externalRef=booking-2"),
            Some(&token),
        )
        .await;
    assert_eq!(none, json!([]));
    let (status, _) = sim
        .get(
            &format!("/api/v1/access/site/{SITE}/visitor/v-404"),
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn create_refuses_what_the_contract_refuses() {
    let sim = start().await;
    let token = sim.token().await;
    let path = format!("/api/v1/access/site/{SITE}/visitor");
    let refused = |fields: Vec<(&'static str, &'static str)>| {
        let sim = &sim;
        let token = token.clone();
        let path = path.clone();
        async move {
            let (status, body) = sim.form(Method::POST, &path, Some(&token), &fields).await;
            (
                status,
                body["error"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    assert_eq!(
        refused(visitor_fields("p-nobody", "r1", FROM, TO)).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    assert_eq!(
        refused(visitor_fields("p-visitor", "r1", FROM, TO)).await.0,
        StatusCode::NOT_FOUND,
        "a visitor cannot be a visitee"
    );
    assert_eq!(
        refused(visitor_fields("p-noprofile", "r1", FROM, TO)).await,
        (StatusCode::CONFLICT, "conflict".into())
    );
    assert_eq!(
        refused(visitor_fields("p-ana", "r1", TO, FROM)).await,
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
    assert_eq!(
        refused(visitor_fields("p-ana", "r1", FROM, FROM)).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        refused(visitor_fields(
            "p-ana",
            "r1",
            "2026-12-01T18:00:00+11:00",
            TO
        ))
        .await
        .0,
        StatusCode::BAD_REQUEST,
        "times carry no offset"
    );
    let mut missing = visitor_fields("p-ana", "r1", FROM, TO);
    missing.retain(|(name, _)| *name != "email");
    assert_eq!(refused(missing).await.0, StatusCode::BAD_REQUEST);
    let mut extra = visitor_fields("p-ana", "r1", FROM, TO);
    extra.push(("pin", "123456"));
    assert_eq!(refused(extra).await.0, StatusCode::BAD_REQUEST);

    // A JSON body is not a form.
    let response = sim
        .http
        .post(sim.url(&path))
        .bearer_auth(&token)
        .json(&json!({"visiteeId": "p-ana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let state = sim.sim.control().state().await.unwrap();
    assert!(state.sites[SITE].visitors.is_empty(), "nothing was created");
}

#[tokio::test]
async fn a_put_changes_only_the_window_and_keeps_the_pin() {
    let sim = start().await;
    let token = sim.token().await;
    let (_, visitor) = sim.create(&token, "booking-1", FROM, TO).await;
    let id = visitor["id"].as_str().unwrap();
    let path = format!("/api/v1/access/site/{SITE}/visitor/{id}");
    let (status, moved) = sim
        .form(
            Method::PUT,
            &path,
            Some(&token),
            &[
                ("validFrom", "2026-12-02T09:00:00"),
                ("validTo", "2026-12-02T11:00:00"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["validFrom"], "2026-12-02T09:00:00");
    assert_eq!(moved["credential"], visitor["credential"]);

    let (status, _) = sim
        .form(
            Method::PUT,
            &path,
            Some(&token),
            &[("validFrom", FROM), ("validTo", TO), ("firstName", "Al")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = sim
        .form(Method::PUT, &path, Some(&token), &[("validFrom", FROM)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = sim
        .form(
            Method::PUT,
            &path,
            Some(&token),
            &[("validFrom", TO), ("validTo", FROM)],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = sim
        .form(
            Method::PUT,
            &format!("/api/v1/access/site/{SITE}/visitor/v-404"),
            Some(&token),
            &[("validFrom", FROM), ("validTo", TO)],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, unchanged) = sim.get(&path, Some(&token)).await;
    assert_eq!(unchanged["validFrom"], "2026-12-02T09:00:00");
}

#[tokio::test]
async fn the_pin_opens_the_profiles_doors_inside_the_window_until_it_is_revoked() {
    let sim = start().await;
    let control = sim.sim.control();
    let token = sim.token().await;
    let (_, visitor) = sim.create(&token, "booking-1", FROM, TO).await;
    let pin = visitor["credential"]["pin"].as_str().unwrap().to_owned();
    let id = visitor["id"].as_str().unwrap();

    let door_at = |now: &'static str, door: &'static str| {
        let control = control.clone();
        let pin = pin.clone();
        async move {
            control.set_clock(now).await.unwrap();
            control.try_door(SITE, door, &pin).await.unwrap()
        }
    };
    assert!(!door_at("2026-12-01T17:59:59", "lobby").await.opens);
    assert!(door_at("2026-12-01T18:00:00", "lobby").await.opens);
    assert!(door_at("2026-12-01T21:59:59", "lift").await.opens);
    assert!(!door_at("2026-12-01T22:00:00", "lobby").await.opens);
    assert_eq!(
        door_at("2026-12-01T19:00:00", "gym").await.reason,
        "door_not_in_profile"
    );
    // An instant is read on the site's clock: 08:00 UTC is 19:00 in Sydney in December.
    assert!(door_at("2026-12-01T08:00:00Z", "lobby").await.opens);

    let credential = format!("/api/v1/access/site/{SITE}/visitor/{id}/credential");
    assert_eq!(
        sim.delete(&credential, &token).await,
        StatusCode::NO_CONTENT
    );
    let check = door_at("2026-12-01T19:00:00", "lobby").await;
    assert_eq!((check.opens, check.reason.as_str()), (false, "unknown_pin"));
    assert_eq!(
        sim.delete(&credential, &token).await,
        StatusCode::NO_CONTENT,
        "idempotent"
    );
    let (_, revoked) = sim
        .get(
            &format!("/api/v1/access/site/{SITE}/visitor/{id}"),
            Some(&token),
        )
        .await;
    assert_eq!(
        revoked["credential"],
        Value::Null,
        "the visitor stays listed"
    );
    assert_eq!(
        sim.delete(
            &format!("/api/v1/access/site/{SITE}/visitor/v-404/credential"),
            &token
        )
        .await,
        StatusCode::NOT_FOUND
    );
    assert!(control.state().await.unwrap().credentials.is_empty());
}

#[tokio::test]
async fn pins_are_unique_among_the_sites_live_credentials() {
    let sim = start().await;
    let token = sim.token().await;
    let mut pins = HashSet::new();
    for n in 0..200 {
        let (status, visitor) = sim.create(&token, &format!("booking-{n}"), FROM, TO).await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(pins.insert(visitor["credential"]["pin"].as_str().unwrap().to_owned()));
    }
    assert_eq!(
        sim.sim.control().state().await.unwrap().credentials.len(),
        200
    );
}

#[tokio::test]
async fn injected_faults_answer_the_next_matching_requests_and_every_request_is_logged() {
    let sim = start().await;
    let control = sim.sim.control();
    let token = sim.token().await;
    control
        .add_fault(&Fault {
            matches: FaultMatch {
                method: Some("POST".into()),
                path_prefix: Some(format!("/api/v1/access/site/{SITE}/visitor")),
            },
            respond: FaultResponse {
                status: Some(429),
                retry_after: Some(2),
                ..Default::default()
            },
            times: 1,
        })
        .await
        .unwrap();
    control
        .add_fault(&Fault {
            matches: FaultMatch {
                method: Some("POST".into()),
                path_prefix: Some("/api/v1/access".into()),
            },
            respond: FaultResponse {
                status: Some(503),
                body: Some(json!({"error": "unavailable", "message": "maintenance"})),
                delay_ms: Some(200),
                ..Default::default()
            },
            times: 1,
        })
        .await
        .unwrap();

    let response = sim
        .http
        .post(sim.url(&format!("/api/v1/access/site/{SITE}/visitor")))
        .bearer_auth(&token)
        .form(&visitor_fields("p-ana", "b-1", FROM, TO))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "2");
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "rate_limited"
    );

    let started = std::time::Instant::now();
    let (status, body) = sim.create(&token, "b-1", FROM, TO).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("maintenance"))
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        sim.create(&token, "b-1", FROM, TO).await.0,
        StatusCode::CREATED
    );

    control
        .add_fault(&Fault {
            matches: FaultMatch::default(),
            respond: FaultResponse {
                status: Some(500),
                ..Default::default()
            },
            times: 5,
        })
        .await
        .unwrap();
    control.clear_faults().await.unwrap();
    assert_eq!(sim.create(&token, "b-1", FROM, TO).await.0, StatusCode::OK);

    let log = control.requests().await.unwrap();
    let statuses: Vec<(String, u16, bool)> = log
        .iter()
        .map(|r| (r.method.clone(), r.status, r.fault))
        .collect();
    assert_eq!(
        statuses,
        [
            ("POST".to_owned(), 200, false),
            ("POST".to_owned(), 429, true),
            ("POST".to_owned(), 503, true),
            ("POST".to_owned(), 201, false),
            ("POST".to_owned(), 200, false),
        ]
    );
    assert_eq!(
        log[0].body.as_deref(),
        Some("(not kept)"),
        "no secret in the log"
    );
    assert!(log[3].body.as_deref().unwrap().contains("externalRef=b-1"));
}

#[tokio::test]
async fn reset_forgets_everything() {
    let sim = start().await;
    let token = sim.token().await;
    sim.create(&token, "b-1", FROM, TO).await;
    sim.sim.control().reset().await.unwrap();
    let state = sim.sim.control().state().await.unwrap();
    assert!(state.sites.is_empty() && state.credentials.is_empty());
    assert!(sim.sim.control().requests().await.unwrap().is_empty());
    let (status, _) = sim
        .get(
            &format!("/api/v1/access/site/{SITE}/person/p-ana"),
            Some(&token),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "tokens are forgotten too");
}
