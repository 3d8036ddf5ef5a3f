//! Each building's visitors go to its own iPassan tenant: the connection arrives as an event
//! (secret sealed), bookings made under it wait for it, a visitor stays in the tenant it was made
//! in, a building connected to nothing fails with a reason, and sealed secrets the service cannot
//! open stop its start.

use std::collections::BTreeMap;
use std::time::Duration;

use contracts::{
    AccessSystem, ConnectionVersions, Envelope, Event, IpassanConnection, IpassanConnectionChange,
    connection_subject, sealed_fields,
};
use ipassan_sim::{ClientSeed, RunningSim, Seed, SiteSeed};
use platform::secrets::SecretsSettings;

use crate::support::{
    self, FROM, Harness, Options, PERSON, RETRIED, SEALING_KEY, TO, booking, cancelled, resident,
    result_of, until, visitors_in,
};

/// The bay building's own tenant: another simulator, another client, another site.
const BAY: &str = "bay";
const BAY_SITE: &str = "bay-site";
const BAY_CLIENT: &str = "connecx-bay";
const BAY_SECRET: &str = "bay-tenant-secret";
const OTHER_KEY: &str = "HxwdGxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAAA=";

async fn bay_tenant() -> RunningSim {
    let sim = ipassan_sim::spawn().await.unwrap();
    sim.control()
        .seed(&Seed {
            sites: BTreeMap::from([(
                BAY_SITE.to_owned(),
                SiteSeed {
                    timezone: Some("Australia/Sydney".into()),
                    persons: vec![resident(PERSON, Some("ap-bay"))],
                    profiles: BTreeMap::from([("ap-bay".to_owned(), vec!["bay-lobby".to_owned()])]),
                },
            )]),
            clients: vec![ClientSeed {
                client_id: BAY_CLIENT.into(),
                client_secret: BAY_SECRET.into(),
                sites: vec![BAY_SITE.into()],
            }],
        })
        .await
        .unwrap();
    sim
}

fn sealed(key: &str, secret: &str) -> contracts::SealedSecret {
    SecretsSettings {
        key: Some(key.into()),
        previous_keys: None,
    }
    .sealer()
    .unwrap()
    .unwrap()
    .seal(secret, sealed_fields::IPASSAN_CLIENT_SECRET)
}

/// The bay building's iPassan connection at `version`: `tenant`, or back to the default.
fn connection(version: i64, tenant: Option<&RunningSim>, sealing_key: &str) -> Envelope {
    Envelope::new(
        connection_subject(BAY, AccessSystem::Ipassan),
        version,
        Event::IpassanConnectionChanged(IpassanConnectionChange {
            building_id: BAY.into(),
            connection: tenant.map(|sim| IpassanConnection {
                base_url: sim.base_url.clone(),
                client_id: BAY_CLIENT.into(),
                client_secret: sealed(sealing_key, BAY_SECRET),
                site: BAY_SITE.into(),
            }),
        }),
    )
}

/// A booking of the bay building made under version `version` of its connection.
fn bay_booking(version: i64) -> contracts::VisitorBooking {
    let mut booking = booking(FROM, TO);
    booking.building.id = BAY.into();
    booking.building.name = "Bay Towers".into();
    booking.building.ipassan_site = Some(BAY_SITE.into());
    booking.building.connection_versions = ConnectionVersions {
        ipassan: version,
        salto: 0,
    };
    booking
}

/// Books `visit` and waits for its grant; asserts its visitor is in the default tenant and not
/// in `bay`.
async fn granted_in_the_default_tenant(
    harness: &mut Harness,
    bay: &RunningSim,
    visit: contracts::VisitorBooking,
) {
    let (id, _) = harness.book_granted(visit).await;
    assert_eq!(harness.visitors_for(id).await.len(), 1);
    assert!(visitors_in(&bay.control(), BAY_SITE, id).await.is_empty());
}

#[tokio::test]
async fn a_building_with_its_own_tenant_gets_its_visitors_there_and_the_others_stay_on_the_default()
{
    let mut harness = support::start().await;
    let bay = bay_tenant().await;
    harness
        .publish(&connection(1, Some(&bay), SEALING_KEY))
        .await;

    let at_bay = harness.publish_created(bay_booking(1)).await;
    let granted = harness.expect_result("visitor_access.granted.v1").await;
    assert_eq!(granted.booking_id, at_bay);
    let made = visitors_in(&bay.control(), BAY_SITE, at_bay).await;
    assert_eq!(made.len(), 1, "the visitor is in the bay tenant");
    assert_eq!(
        made[0].credential.as_ref().unwrap().pin,
        result_of(&granted).pin.clone().unwrap()
    );
    assert!(
        harness.visitors_for(at_bay).await.is_empty(),
        "and not in the default one"
    );

    granted_in_the_default_tenant(&mut harness, &bay, booking(FROM, TO)).await;
}

#[tokio::test]
async fn a_booking_made_under_a_connection_not_yet_here_waits_for_it_and_goes_nowhere_else() {
    let mut harness = support::start_with_tiers("300ms,300ms,300ms,300ms,300ms,300ms").await;
    let bay = bay_tenant().await;
    let id = harness.publish_created(bay_booking(1)).await;
    // The worker's first try ends in a retry: it must not call any tenant with an older
    // connection.
    until("the worker to try the booking and retry it", async || {
        harness.queue_counter(RETRIED).await >= 1.0
    })
    .await;
    assert!(
        harness.requests().await.is_empty(),
        "the default tenant was called"
    );
    assert!(bay.control().requests().await.unwrap().is_empty());

    harness
        .publish(&connection(1, Some(&bay), SEALING_KEY))
        .await;
    harness.expect_result("visitor_access.granted.v1").await;
    assert_eq!(visitors_in(&bay.control(), BAY_SITE, id).await.len(), 1);
    assert!(
        harness.requests().await.is_empty(),
        "the default tenant was never called"
    );
    harness.no_dead_letters(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_visitor_stays_in_the_tenant_it_was_made_in_when_the_building_moves_on() {
    let mut harness = support::start().await;
    let bay = bay_tenant().await;
    harness
        .publish(&connection(1, Some(&bay), SEALING_KEY))
        .await;
    let (old, _) = harness.book_granted(bay_booking(1)).await;

    // The operator puts the building back on the default.
    harness.publish(&connection(2, None, SEALING_KEY)).await;
    harness.publish(&cancelled(old, 2, bay_booking(2))).await;
    harness.expect_result("visitor_access.revoked.v1").await;
    let revoked = visitors_in(&bay.control(), BAY_SITE, old).await;
    assert!(revoked[0].credential.is_none(), "revoked where it was made");

    // A new booking goes to the default tenant (with the building's own site).
    let mut new_booking = bay_booking(2);
    new_booking.building.ipassan_site = Some(support::SITE.into());
    granted_in_the_default_tenant(&mut harness, &bay, new_booking).await;
}

#[tokio::test]
async fn without_a_default_a_building_with_no_tenant_of_its_own_fails_with_a_reason() {
    let mut harness = support::start_with(Options {
        default_tenant: false,
        ..Options::default()
    })
    .await;
    harness.publish_created(booking(FROM, TO)).await;
    let failed = harness.expect_result("visitor_access.failed.v1").await;
    let failure = result_of(&failed).failure.clone().unwrap();
    assert_eq!(failure.code, "ipassan_not_connected");
    assert!(failure.needs_manager);
    assert!(harness.requests().await.is_empty());
}

#[tokio::test]
async fn a_tenant_secret_that_cannot_be_opened_stops_the_start_and_a_rotated_key_reseals_it() {
    let harness = support::start().await;
    let bay = bay_tenant().await;
    harness.publish(&connection(1, Some(&bay), OTHER_KEY)).await;
    // The event is stored even so (the secret is opened only when the tenant is used).
    harness.until_handled(1).await;
    harness.stop_service();

    let error = ipassan_sync::Application::build(harness.settings().clone())
        .await
        .err()
        .expect("the start is refused")
        .to_string();
    assert!(error.contains("CONNECX__SECRETS__KEY"), "{error}");
    assert!(error.contains(BAY_CLIENT), "{error}");

    let mut rotated = harness.settings().clone();
    rotated.secrets = SecretsSettings {
        key: Some(SEALING_KEY.into()),
        previous_keys: Some(OTHER_KEY.into()),
    };
    ipassan_sync::Application::build(rotated)
        .await
        .expect("starts with the old key as previous");
    // Re-sealed under the current key: the current key alone now opens it.
    ipassan_sync::Application::build(harness.settings().clone())
        .await
        .expect("starts with the current key alone");
}
