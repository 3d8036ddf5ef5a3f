//! The iPassan API as `docs/contracts/ipassan.md` fixes it: the token endpoint, persons and visitors
//! under `/api/v1/access/site/{site}`. Each handler checks the bearer token and the site grant
//! first (401, then 403), then applies the contract's rules to the [`World`].

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::SimState;
use crate::error::{ApiError, json};
use crate::form::Form;
use crate::model::{
    Credential, IssuedToken, Site, Visitor, World, choose_pin, parse_local, random_numbers,
};

pub fn routes() -> Router<SimState> {
    Router::new()
        .route("/api/v1/token", post(token))
        .route(
            "/api/v1/access/site/{site}/person/{person_id}",
            get(person_by_id),
        )
        .route("/api/v1/access/site/{site}/person", get(persons_by_email))
        .route(
            "/api/v1/access/site/{site}/visitor",
            post(create_visitor).get(visitors_by_ref),
        )
        .route(
            "/api/v1/access/site/{site}/visitor/{visitor_id}",
            get(visitor_by_id).put(update_visitor),
        )
        .route(
            "/api/v1/access/site/{site}/visitor/{visitor_id}/credential",
            delete(revoke_credential),
        )
}

async fn token(State(state): State<SimState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match Form::parse(
        &headers,
        &body,
        &["grant_type", "client_id", "client_secret"],
        &["scope"],
    ) {
        Ok(form) => form,
        Err(e) => return e.into_response(),
    };
    if form.get("grant_type") != "client_credentials" {
        return ApiError::invalid_request("grant_type must be client_credentials").into_response();
    }
    if form.has("scope") && form.get("scope") != "all" {
        return ApiError::invalid_request("scope must be `all`").into_response();
    }
    let mut world = state.world();
    let known = world
        .clients
        .get(form.get("client_id"))
        .is_some_and(|c| c.client_secret == form.get("client_secret"));
    if !known {
        return ApiError::invalid_token("bad client credentials").into_response();
    }
    let access_token = uuid::Uuid::new_v4().simple().to_string();
    let lifetime = world.token_lifetime;
    world.tokens.insert(
        access_token.clone(),
        IssuedToken {
            client_id: form.get("client_id").to_owned(),
            expires_at: Instant::now() + lifetime,
        },
    );
    json(
        StatusCode::OK,
        &serde_json::json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": lifetime.as_secs(),
        }),
    )
}

/// 401 for a missing, unknown or expired token; 403 when its client is not granted `site`.
fn authorize(world: &World, headers: &HeaderMap, site: &str) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::invalid_token("missing bearer token"))?;
    let issued = world
        .tokens
        .get(presented)
        .ok_or_else(|| ApiError::invalid_token("unknown token"))?;
    if Instant::now() >= issued.expires_at {
        return Err(ApiError::invalid_token("token expired"));
    }
    let granted = world
        .clients
        .get(&issued.client_id)
        .is_some_and(|c| c.sites.iter().any(|s| s == site));
    if !granted {
        return Err(ApiError::access_denied(format!(
            "site {site} is not granted to client {}",
            issued.client_id
        )));
    }
    Ok(())
}

/// The site after authorization; a granted site that was never seeded is simply empty.
fn site_mut<'w>(
    world: &'w mut World,
    headers: &HeaderMap,
    site: &str,
) -> Result<&'w mut Site, ApiError> {
    authorize(world, headers, site)?;
    Ok(world.sites.entry(site.to_owned()).or_default())
}

async fn person_by_id(
    State(state): State<SimState>,
    headers: HeaderMap,
    Path((site, person_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let mut world = state.world();
    let site = site_mut(&mut world, &headers, &site)?;
    let person = site
        .persons
        .get(&person_id)
        .ok_or_else(|| ApiError::not_found(format!("person {person_id} unknown")))?;
    Ok(json(StatusCode::OK, person))
}

async fn persons_by_email(
    State(state): State<SimState>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut world = state.world();
    let site = site_mut(&mut world, &headers, &site)?;
    let email = query
        .get("email")
        .ok_or_else(|| ApiError::invalid_request("missing query parameter `email`"))?;
    let found: Vec<_> = site
        .persons
        .values()
        .filter(|p| p.email.eq_ignore_ascii_case(email))
        .collect();
    Ok(json(StatusCode::OK, &found))
}

/// The window of a write, checked: both times in the contract's format, `validTo > validFrom`.
fn window(form: &Form) -> Result<(chrono::NaiveDateTime, chrono::NaiveDateTime), ApiError> {
    let read = |name: &str| {
        parse_local(form.get(name)).ok_or_else(|| {
            ApiError::invalid_request(format!(
                "`{name}` must be a site-local time YYYY-MM-DDTHH:MM:SS"
            ))
        })
    };
    let (from, to) = (read("validFrom")?, read("validTo")?);
    if to <= from {
        return Err(ApiError::invalid_request("validTo must be after validFrom"));
    }
    Ok((from, to))
}

const VISITOR_FIELDS: [&str; 7] = [
    "visiteeId",
    "firstName",
    "lastName",
    "email",
    "validFrom",
    "validTo",
    "externalRef",
];

async fn create_visitor(
    State(state): State<SimState>,
    headers: HeaderMap,
    Path(site_name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut world = state.world();
    authorize(&world, &headers, &site_name)?;
    let form = Form::parse(&headers, &body, &VISITOR_FIELDS, &[])?;
    let (valid_from, valid_to) = window(&form)?;
    let external_ref = form.get("externalRef");
    if external_ref.is_empty() {
        return Err(ApiError::invalid_request("externalRef must not be empty"));
    }
    let site = world.sites.entry(site_name.clone()).or_default();
    if let Some(existing) = site.visitors.by_ref(external_ref) {
        // Idempotent create: the same externalRef answers the visitor already made.
        return Ok(json(StatusCode::OK, existing));
    }
    let visitee_id = form.get("visiteeId");
    let visitee = site
        .persons
        .get(visitee_id)
        .filter(|p| p.can_be_visitee())
        .ok_or_else(|| ApiError::not_found(format!("visitee {visitee_id} unknown")))?;
    let access_profile_id = visitee
        .access_profile_id
        .clone()
        .ok_or_else(|| ApiError::conflict(format!("visitee {visitee_id} has no access profile")))?;
    let pin = choose_pin(random_numbers(), |pin| {
        site.visitors.by_live_pin(pin).is_some()
    })
    .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no free PIN at this site"))?;
    let id = world.next_visitor_id();
    let visitor = Visitor {
        id: id.clone(),
        visitee_id: visitee_id.to_owned(),
        first_name: form.get("firstName").to_owned(),
        last_name: form.get("lastName").to_owned(),
        email: form.get("email").to_owned(),
        valid_from,
        valid_to,
        access_profile_id,
        external_ref: external_ref.to_owned(),
        credential: Some(Credential {
            kind: "pin".to_owned(),
            pin,
        }),
    };
    world
        .sites
        .entry(site_name)
        .or_default()
        .visitors
        .insert(visitor.clone());
    Ok(json(StatusCode::CREATED, &visitor))
}

async fn visitors_by_ref(
    State(state): State<SimState>,
    headers: HeaderMap,
    Path(site): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut world = state.world();
    let site = site_mut(&mut world, &headers, &site)?;
    let external_ref = query
        .get("externalRef")
        .ok_or_else(|| ApiError::invalid_request("missing query parameter `externalRef`"))?;
    let found: Vec<_> = site.visitors.by_ref(external_ref).into_iter().collect();
    Ok(json(StatusCode::OK, &found))
}

async fn visitor_by_id(
    State(state): State<SimState>,
    headers: HeaderMap,
    Path((site, visitor_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let mut world = state.world();
    let site = site_mut(&mut world, &headers, &site)?;
    let visitor = site
        .visitors
        .get(&visitor_id)
        .ok_or_else(|| ApiError::not_found(format!("visitor {visitor_id} unknown")))?;
    Ok(json(StatusCode::OK, visitor))
}

async fn update_visitor(
    State(state): State<SimState>,
    headers: HeaderMap,
    Path((site, visitor_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut world = state.world();
    let site = site_mut(&mut world, &headers, &site)?;
    let form = Form::parse(&headers, &body, &["validFrom", "validTo"], &[])?;
    let (valid_from, valid_to) = window(&form)?;
    // Only the window changes; the PIN stays the same.
    let visitor = site
        .visitors
        .set_window(&visitor_id, valid_from, valid_to)
        .ok_or_else(|| ApiError::not_found(format!("visitor {visitor_id} unknown")))?;
    Ok(json(StatusCode::OK, visitor))
}

async fn revoke_credential(
    State(state): State<SimState>,
    headers: HeaderMap,
    Path((site, visitor_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let mut world = state.world();
    let site = site_mut(&mut world, &headers, &site)?;
    if !site.visitors.revoke(&visitor_id) {
        return Err(ApiError::not_found(format!("visitor {visitor_id} unknown")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
