//! The typed iPassan client against the simulator: the contract's shapes, its 404 meanings, the
//! token rules and the classification of failures, as the handler relies on them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use ipassan_client::visit::{VisitWindow, parse_local, split_name};
use ipassan_client::{
    ErrorKind, IpassanClient, IpassanError, Missing, NewVisitor, PersonKind, TenantSettings,
};
use ipassan_sim::model::{Fault, FaultMatch, FaultResponse};
use ipassan_sim::{ClientSeed, Person, RunningSim, Seed, SiteSeed};

const SITE: &str = "site 1/a"; // needs percent-encoding in a path

async fn sim() -> RunningSim {
    let sim = ipassan_sim::spawn().await.unwrap();
    let person = |id: &str, email: &str, profile: Option<&str>| Person {
        id: id.into(),
        kind: 1,
        first_name: "Ana".into(),
        last_name: "Lee".into(),
        email: email.into(),
        access_profile_id: profile.map(String::from),
    };
    sim.control()
        .seed(&Seed {
            sites: BTreeMap::from([(
                SITE.to_owned(),
                SiteSeed {
                    timezone: None,
                    persons: vec![
                        person("p-ana", "ana@example.com", Some("ap-7")),
                        person("p-bare", "bare@example.com", None),
                    ],
                    profiles: BTreeMap::from([("ap-7".to_owned(), vec!["lobby".to_owned()])]),
                },
            )]),
            clients: vec![ClientSeed {
                client_id: "connecx".into(),
                client_secret: "secret".into(),
                sites: vec![SITE.into()],
            }],
        })
        .await
        .unwrap();
    sim
}

fn client(base_url: &str, secret: &str, timeout_secs: u64) -> IpassanClient {
    IpassanClient::new(&TenantSettings {
        base_url: base_url.into(),
        client_id: "connecx".into(),
        client_secret: secret.into(),
        timeout: Duration::from_secs(timeout_secs),
    })
    .unwrap()
}

fn window(from: &str, to: &str) -> VisitWindow {
    VisitWindow {
        from: parse_local(from).unwrap(),
        to: parse_local(to).unwrap(),
    }
}

#[tokio::test]
async fn persons_and_visitors_read_as_the_contract_shows_them() {
    let sim = sim().await;
    let ipassan = client(&sim.base_url, "secret", 5);
    let ana = ipassan.person(SITE, "p-ana").await.unwrap().unwrap();
    assert_eq!(ana.kind, PersonKind::Resident);
    assert_eq!(ana.access_profile_id.as_deref(), Some("ap-7"));
    assert_eq!(ipassan.person(SITE, "p-nobody").await.unwrap(), None);
    let found = ipassan
        .persons_by_email(SITE, "ANA@example.com")
        .await
        .unwrap();
    assert_eq!(found, vec![ana]);

    let name = split_name("Bo Tan");
    let evening = window("2026-12-01T18:00:00", "2026-12-01T22:00:00");
    let new = NewVisitor {
        visitee_id: "p-ana",
        name: &name,
        email: "bo@example.com",
        window: evening,
        external_ref: "booking-1",
    };
    assert_eq!(
        ipassan
            .visitor_by_external_ref(SITE, "booking-1")
            .await
            .unwrap(),
        None
    );
    let made = ipassan.create_visitor(SITE, &new).await.unwrap();
    assert_eq!(made.window, evening);
    assert_eq!(made.access_profile_id.as_deref(), Some("ap-7"));
    let pin = made.pin.clone().unwrap();
    assert_eq!(
        ipassan.create_visitor(SITE, &new).await.unwrap(),
        made,
        "idempotent"
    );
    assert_eq!(
        ipassan
            .visitor_by_external_ref(SITE, "booking-1")
            .await
            .unwrap(),
        Some(made.clone())
    );

    let morning = window("2026-12-02T09:00:00", "2026-12-02T10:00:00");
    let moved = ipassan
        .update_window(SITE, &made.id, morning)
        .await
        .unwrap();
    assert_eq!(
        (moved.window, moved.pin.as_deref()),
        (morning, Some(pin.as_str()))
    );

    ipassan.revoke_credential(SITE, &made.id).await.unwrap();
    ipassan.revoke_credential(SITE, &made.id).await.unwrap();
    assert_eq!(
        ipassan.visitor(SITE, &made.id).await.unwrap().unwrap().pin,
        None
    );
    assert_eq!(ipassan.visitor(SITE, "v-404").await.unwrap(), None);
}

#[tokio::test]
async fn a_404_or_409_on_create_names_the_visitee_problem() {
    let sim = sim().await;
    let ipassan = client(&sim.base_url, "secret", 5);
    let name = split_name("Bo Tan");
    let new = |visitee, external_ref| NewVisitor {
        visitee_id: visitee,
        name: &name,
        email: "bo@example.com",
        window: window("2026-12-01T18:00:00", "2026-12-01T22:00:00"),
        external_ref,
    };
    let unknown = ipassan
        .create_visitor(SITE, &new("p-gone", "b-1"))
        .await
        .unwrap_err();
    assert!(matches!(
        unknown,
        IpassanError::NotFound {
            missing: Missing::Visitee,
            ..
        }
    ));
    let bare = ipassan
        .create_visitor(SITE, &new("p-bare", "b-2"))
        .await
        .unwrap_err();
    assert!(matches!(bare, IpassanError::Conflict { .. }), "{bare}");
    let moved = ipassan
        .update_window(
            SITE,
            "v-404",
            window("2026-12-01T18:00:00", "2026-12-01T19:00:00"),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        moved,
        IpassanError::NotFound {
            missing: Missing::Visitor,
            ..
        }
    ));
    let backwards = ipassan
        .create_visitor(
            SITE,
            &NewVisitor {
                window: window("2026-12-01T18:00:00", "2026-12-01T18:00:00"),
                ..new("p-ana", "b-3")
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(backwards, IpassanError::InvalidRequest { .. }));
    assert_eq!(backwards.kind(), ErrorKind::Permanent);
}

#[tokio::test]
async fn a_site_not_granted_is_permanent_and_bad_credentials_are_not_retried_in_a_loop() {
    let sim = sim().await;
    let denied = client(&sim.base_url, "secret", 5)
        .person("other-site", "p-ana")
        .await
        .unwrap_err();
    assert!(
        matches!(denied, IpassanError::AccessDenied { .. }),
        "{denied}"
    );
    assert_eq!(denied.kind(), ErrorKind::Permanent);

    let wrong = client(&sim.base_url, "wrong", 5)
        .person(SITE, "p-ana")
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, IpassanError::BadCredentials { .. }),
        "{wrong}"
    );
    assert_eq!(wrong.kind(), ErrorKind::Transient);
    let token_requests = sim
        .control()
        .requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.path == "/api/v1/token" && r.status == 401)
        .count();
    assert_eq!(token_requests, 1);
}

#[tokio::test]
async fn a_401_renews_the_token_once_and_a_second_401_is_transient() {
    let sim = sim().await;
    let ipassan = client(&sim.base_url, "secret", 5);
    ipassan.person(SITE, "p-ana").await.unwrap();
    let refuse = |times| Fault {
        matches: FaultMatch {
            method: Some("GET".into()),
            path_prefix: Some("/api/v1/access".into()),
        },
        respond: FaultResponse {
            status: Some(401),
            ..Default::default()
        },
        times,
    };
    sim.control().add_fault(&refuse(1)).await.unwrap();
    assert!(ipassan.person(SITE, "p-ana").await.unwrap().is_some());
    sim.control().add_fault(&refuse(2)).await.unwrap();
    let refused = ipassan.person(SITE, "p-ana").await.unwrap_err();
    assert!(
        matches!(refused, IpassanError::Unauthorized { .. }),
        "{refused}"
    );
    assert_eq!(refused.kind(), ErrorKind::Transient);
    let tokens = sim
        .control()
        .requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.path == "/api/v1/token")
        .count();
    assert_eq!(tokens, 3, "one at start, one per first 401");
}

#[tokio::test]
async fn timeouts_and_unreachable_servers_are_transient() {
    let sim = sim().await;
    sim.control()
        .add_fault(&Fault {
            matches: FaultMatch::default(),
            respond: FaultResponse {
                status: Some(200),
                delay_ms: Some(2500),
                ..Default::default()
            },
            times: 1,
        })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let slow = client(&sim.base_url, "secret", 1)
        .person(SITE, "p-ana")
        .await
        .unwrap_err();
    assert!(matches!(slow, IpassanError::Timeout(_)), "{slow}");
    assert_eq!(slow.kind(), ErrorKind::Transient);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout was kept"
    );

    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let down = client(&format!("http://{closed}"), "secret", 1)
        .person(SITE, "p-ana")
        .await
        .unwrap_err();
    assert!(matches!(down, IpassanError::Connection(_)), "{down}");
    assert_eq!(down.kind(), ErrorKind::Transient);
}

#[tokio::test]
async fn a_429_with_a_short_retry_after_is_waited_out_once() {
    let sim = sim().await;
    let ipassan = client(&sim.base_url, "secret", 5);
    let limited = |times| Fault {
        matches: FaultMatch {
            method: Some("GET".into()),
            path_prefix: Some("/api/v1/access".into()),
        },
        respond: FaultResponse {
            status: Some(429),
            retry_after: Some(1),
            ..Default::default()
        },
        times,
    };
    sim.control().add_fault(&limited(1)).await.unwrap();
    let started = std::time::Instant::now();
    assert!(ipassan.person(SITE, "p-ana").await.unwrap().is_some());
    assert!(started.elapsed() >= Duration::from_secs(1));

    sim.control().add_fault(&limited(2)).await.unwrap();
    let twice = ipassan.person(SITE, "p-ana").await.unwrap_err();
    assert_eq!(
        twice,
        IpassanError::RateLimited {
            retry_after: Some(Duration::from_secs(1))
        }
    );
    assert_eq!(twice.kind(), ErrorKind::Transient);
}
