//! The world a soak runs in: a few buildings with many apartments (each with a resident synced to
//! iPassan and a Salto access level) and facilities (Salto zones), seeded identically in the
//! iPassan simulator, the Salto simulator and booking-api (through its admin `PUT`s, as a manager
//! would). A few residents' iPassan persons have no access profile, so their visitors are refused
//! (`visitee_has_no_access_profile`): a failure path the audit expects and checks too.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use booking_api::auth::{TokenClaims, mint_token};
use contracts::Role;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

/// The time zone of every soak building (and of the Salto server).
pub const TIMEZONE: &str = "Australia/Sydney";
/// ipassan-sync's client at the iPassan simulator.
pub const IPASSAN_CLIENT_ID: &str = "connecx-soak";
pub const IPASSAN_CLIENT_SECRET: &str = "soak-secret";
/// Every `NO_PROFILE_EVERY`-th resident's iPassan person has no access profile (and the last of
/// each building, so that a small run has one too).
const NO_PROFILE_EVERY: usize = 25;

#[derive(Debug, Clone)]
pub struct Building {
    pub id: String,
    pub name: String,
    pub ipassan_site: String,
    pub manager_email: String,
    pub apartments: Vec<Apartment>,
    pub facilities: Vec<Facility>,
}

#[derive(Debug, Clone)]
pub struct Apartment {
    pub id: String,
    /// Salto access level ExtID.
    pub access_level: String,
    pub resident: Resident,
}

#[derive(Debug, Clone)]
pub struct Resident {
    pub id: String,
    pub name: String,
    pub email: String,
    pub ipassan_person: String,
    /// The person's iPassan access profile; `None` = visitors are refused.
    pub access_profile: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Facility {
    pub id: String,
    pub name: String,
    /// Salto zone ExtID.
    pub zone: String,
}

/// Every building of the run and the secret booking-api checks tokens with.
#[derive(Debug, Clone)]
pub struct World {
    pub buildings: Vec<Building>,
    pub jwt_secret: String,
}

impl World {
    pub fn new(buildings: usize, apartments: usize, facilities: usize, jwt_secret: &str) -> Self {
        let buildings = (1..=buildings)
            .map(|b| {
                let id = format!("soak-{b}");
                let apartments = (1..=apartments)
                    .map(|a| {
                        let resident_id = format!("r-{b}-{a}");
                        Apartment {
                            id: format!("apt-{a}"),
                            access_level: format!("AL-{b}-{a}"),
                            resident: Resident {
                                name: format!("Resident {b}-{a}"),
                                email: format!("{resident_id}@residents.soak.example"),
                                ipassan_person: format!("p-{b}-{a}"),
                                access_profile: (a % NO_PROFILE_EVERY != 0 && a != apartments)
                                    .then(|| format!("ap-{b}-{a}")),
                                id: resident_id,
                            },
                        }
                    })
                    .collect();
                let facilities = (1..=facilities)
                    .map(|f| Facility {
                        id: format!("facility-{f}"),
                        name: format!("Facility {f}"),
                        zone: format!("Z-{b}-{f}"),
                    })
                    .collect();
                Building {
                    name: format!("Soak Tower {b}"),
                    ipassan_site: format!("site-{b}"),
                    manager_email: format!("manager@{id}.soak.example"),
                    id,
                    apartments,
                    facilities,
                }
            })
            .collect();
        Self {
            buildings,
            jwt_secret: jwt_secret.to_owned(),
        }
    }

    fn token(&self, building: &Building, sub: &str, role: Role, apartment: Option<&str>) -> String {
        let claims = TokenClaims {
            sub: sub.to_owned(),
            role,
            building_id: building.id.clone(),
            apartment_id: apartment.map(str::to_owned),
            exp: (chrono::Utc::now().timestamp() + 7 * 24 * 3600) as u64,
        };
        // Signing a small JSON document with HMAC cannot fail.
        mint_token(&self.jwt_secret, &claims).unwrap_or_default()
    }

    pub fn manager_token(&self, building: usize) -> String {
        let b = &self.buildings[building];
        self.token(b, &format!("manager-{}", b.id), Role::Manager, None)
    }

    pub fn resident_token(&self, building: usize, apartment: usize) -> String {
        let b = &self.buildings[building];
        let a = &b.apartments[apartment];
        self.token(b, &a.resident.id, Role::Resident, Some(&a.id))
    }

    /// The iPassan simulator's seed: a site per building with its residents and their profiles.
    pub fn ipassan_seed(&self) -> ipassan_sim::Seed {
        let sites = self
            .buildings
            .iter()
            .map(|b| {
                let persons = b
                    .apartments
                    .iter()
                    .map(|a| ipassan_sim::Person {
                        id: a.resident.ipassan_person.clone(),
                        kind: 1,
                        first_name: "Resident".into(),
                        last_name: a.resident.id.clone(),
                        email: a.resident.email.clone(),
                        access_profile_id: a.resident.access_profile.clone(),
                    })
                    .collect();
                let profiles = b
                    .apartments
                    .iter()
                    .filter_map(|a| {
                        let profile = a.resident.access_profile.clone()?;
                        Some((profile, vec!["lobby".to_owned(), a.id.clone()]))
                    })
                    .collect();
                (
                    b.ipassan_site.clone(),
                    ipassan_sim::SiteSeed {
                        timezone: Some(TIMEZONE.into()),
                        persons,
                        profiles,
                    },
                )
            })
            .collect::<BTreeMap<_, _>>();
        ipassan_sim::Seed {
            sites,
            clients: vec![ipassan_sim::ClientSeed {
                client_id: IPASSAN_CLIENT_ID.into(),
                client_secret: IPASSAN_CLIENT_SECRET.into(),
                sites: self
                    .buildings
                    .iter()
                    .map(|b| b.ipassan_site.clone())
                    .collect(),
            }],
        }
    }

    /// The Salto simulator's seed: every apartment's access level and every facility's zone.
    pub fn salto_seed(&self) -> Value {
        let groups: Vec<Value> = self
            .buildings
            .iter()
            .flat_map(|b| &b.apartments)
            .map(|a| json!({"ext_id": a.access_level, "name": format!("Apartment {}", a.access_level)}))
            .collect();
        let zones: Vec<Value> = self
            .buildings
            .iter()
            .flat_map(|b| &b.facilities)
            .map(|f| json!({"ext_id": f.zone, "name": f.name}))
            .collect();
        json!({"timezone": TIMEZONE, "groups": groups, "zones": zones})
    }

    /// Registers every building, apartment, facility and resident in booking-api.
    /// Connects building `building` to its own iPassan tenant and Salto server, as a connecX
    /// operator does (the same client credentials; the simulators are seeded alike).
    pub async fn connect_own_systems(
        &self,
        http: &reqwest::Client,
        api: &str,
        building: usize,
        ipassan_base_url: &str,
        salto_url: &str,
        timeout_secs: u64,
    ) -> anyhow::Result<()> {
        let b = &self.buildings[building];
        let claims = TokenClaims {
            sub: "soak-operator".to_owned(),
            role: Role::Operator,
            building_id: String::new(),
            apartment_id: None,
            exp: (chrono::Utc::now().timestamp() + 7 * 24 * 3600) as u64,
        };
        let operator = mint_token(&self.jwt_secret, &claims).unwrap_or_default();
        put(
            http,
            api,
            &operator,
            &format!("/v1/buildings/{}/connections/ipassan", b.id),
            json!({"base_url": ipassan_base_url, "client_id": IPASSAN_CLIENT_ID,
                   "client_secret": IPASSAN_CLIENT_SECRET, "site": b.ipassan_site}),
        )
        .await?;
        put(
            http,
            api,
            &operator,
            &format!("/v1/buildings/{}/connections/salto", b.id),
            json!({"url": salto_url, "auth_kind": "none", "timeout_secs": timeout_secs}),
        )
        .await
    }

    pub async fn register(&self, http: &reqwest::Client, api: &str) -> anyhow::Result<()> {
        for (index, b) in self.buildings.iter().enumerate() {
            let manager = self.manager_token(index);
            put(
                http,
                api,
                &manager,
                &format!("/v1/buildings/{}", b.id),
                json!({"name": b.name, "timezone": TIMEZONE, "manager_emails": [b.manager_email],
                       "ipassan_site": b.ipassan_site, "double_booking_policy": "auto"}),
            )
            .await?;
            let mut puts = Vec::new();
            for a in &b.apartments {
                puts.push((
                    format!("/v1/apartments/{}", a.id),
                    json!({"access_control_id": a.access_level}),
                ));
            }
            for f in &b.facilities {
                puts.push((
                    format!("/v1/facilities/{}", f.id),
                    json!({"name": f.name, "access_control_facility_id": f.zone}),
                ));
            }
            run_puts(http, api, &manager, puts).await?;
            let residents = b
                .apartments
                .iter()
                .map(|a| {
                    (
                        format!("/v1/residents/{}", a.resident.id),
                        json!({"name": a.resident.name, "email": a.resident.email,
                               "apartment_id": a.id, "ipassan_person_id": a.resident.ipassan_person}),
                    )
                })
                .collect();
            run_puts(http, api, &manager, residents).await?;
        }
        Ok(())
    }
}

async fn run_puts(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    puts: Vec<(String, Value)>,
) -> anyhow::Result<()> {
    futures::stream::iter(puts)
        .map(|(path, body)| async move { put(http, api, token, &path, body).await })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn put(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<()> {
    let response = http
        .put(format!("{api}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("seeding booking-api: PUT {path}"))?;
    let status = response.status();
    if !status.is_success() {
        let problem = response.text().await.unwrap_or_default();
        bail!("seeding booking-api: PUT {path} answered {status}: {problem}");
    }
    Ok(())
}
