//! The OpenAPI document served at `/openapi.json` (and browsed at `/docs`).
//!
//! The document must describe every answer the API gives, because clients are generated from it
//! and CI fuzzes the API against it (`scripts/fuzz-api`). A route's annotation names what is its
//! own: its body, its success, the refusals of its domain. What a route answers because of what
//! stands in front of it — the bearer token check, a resident's write rate, the JSON body reader,
//! the path id readers, the request timeout, the database — is the same for every route of that
//! shape, so [`CommonAnswers`] adds it once, from the operation's shape, instead of each
//! annotation repeating it (and one of them forgetting).

use std::collections::BTreeMap;

use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::Response;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::problem::PROBLEM_JSON;
use crate::routes::{admin, connections, facility_bookings, health, visitor_bookings};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "connecX booking API",
        description = "Visitor and facility bookings, the building directory, and buildings' connections to their access-control systems. Errors are RFC 9457 problem+json with a stable `code`. Every operation lists every status it can answer; a `503` with `Retry-After` (`database_unavailable`) means the database is out of reach for a moment and the request can be sent again (with the same `Idempotency-Key` for a creation). The roles of the bearer requirement name who may call an operation."
    ),
    paths(
        visitor_bookings::create,
        visitor_bookings::list,
        visitor_bookings::get,
        visitor_bookings::patch,
        visitor_bookings::cancel,
        facility_bookings::create,
        facility_bookings::list,
        facility_bookings::get,
        facility_bookings::patch,
        facility_bookings::cancel,
        admin::put_building,
        admin::put_apartment,
        admin::put_facility,
        admin::put_resident,
        connections::put_ipassan,
        connections::get_ipassan,
        connections::delete_ipassan,
        connections::put_salto,
        connections::get_salto,
        connections::delete_salto,
        connections::check_ipassan,
        connections::check_salto,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(
        crate::problem::ProblemDetails,
        crate::domain::validation::FieldError,
        // Named by path parameters, which utoipa does not collect.
        crate::domain::ids::BuildingId,
        crate::domain::ids::ApartmentId,
        crate::domain::ids::FacilityId,
        crate::domain::ids::ResidentId,
    )),
    modifiers(&BearerAuth, &CommonAnswers),
    tags(
        (name = "visitor bookings", description = "A resident expects a visitor; optionally with a PIN"),
        (name = "facility bookings", description = "An apartment books a facility for part of a day"),
        (name = "admin", description = "Managers keep the building's directory"),
        (name = "connections", description = "Operators connect a building to its own iPassan tenant and Salto SHIP endpoint; secrets are sealed and never shown"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The name of the bearer security scheme; its requirements list the roles that may call.
pub const BEARER: &str = "bearer";

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        scheme.description = Some(
            "HS256 JWT from the connecX backend: `sub`, `role` (`resident` | `manager` | \
             `operator`), `building_id` (residents and managers), `apartment_id` (residents), `exp`."
                .to_owned(),
        );
        components.add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}

/// Adds to every operation the answers that come from what stands in front of its handler.
struct CommonAnswers;

/// What stands in front of a route's handler, and can answer in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// The router's request timeout and the panic guard sit in front of every route.
    EveryRoute,
    /// The bearer token check (`src/auth.rs`).
    Token,
    /// A resident's or manager's route called with an operator's token.
    NotForOperators,
    /// An operator's route called with a resident's or manager's token.
    OperatorOnly,
    /// A write a resident may make is a booking write, counted against the resident's rate
    /// (`src/rate_limit.rs`) before anything else.
    ResidentWrite,
    /// A manager's route called with a resident's token.
    ManagersOnly,
    /// The JSON body reader (`src/extract.rs`, `ApiJson`).
    JsonBody,
    /// A connecX id in the path (`EntityIdPath`).
    EntityIdPath,
    /// A booking id in the path (`BookingIdPath`): anything that is not a UUID cannot name one.
    BookingIdPath,
    /// `Idempotency-Key` (`src/extract.rs`).
    IdempotencyKey,
    /// Every `/v1/` route reads or writes PostgreSQL.
    Database,
}

/// One answer a gate gives: its status, its stable `code`, and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    gate: Gate,
    status: &'static str,
    code: &'static str,
    meaning: &'static str,
}

const fn answer(
    gate: Gate,
    status: &'static str,
    code: &'static str,
    meaning: &'static str,
) -> Answer {
    Answer {
        gate,
        status,
        code,
        meaning,
    }
}

/// Every answer of every gate, each gate's in the order the document lists them.
const ANSWERS: &[Answer] = &[
    answer(
        Gate::EveryRoute,
        "408",
        "request_timeout",
        "the request, its body included, took longer than `CONNECX__HTTP__REQUEST_TIMEOUT_SECS`",
    ),
    answer(
        Gate::EveryRoute,
        "500",
        "internal_error",
        "a failure of the service itself (logged with its cause, never shown); safe to retry",
    ),
    answer(
        Gate::Token,
        "401",
        "missing_token",
        "no `Authorization` header (challenge `Bearer`)",
    ),
    answer(
        Gate::Token,
        "401",
        "invalid_token",
        "not `Bearer <token>`, or a token that is malformed, wrongly signed, not valid yet, or whose claims cannot be used",
    ),
    answer(
        Gate::Token,
        "401",
        "token_expired",
        "the token's `exp` has passed",
    ),
    answer(
        Gate::NotForOperators,
        "403",
        "not_for_operators",
        "an operator's token: bookings and building records belong to residents and managers",
    ),
    answer(
        Gate::OperatorOnly,
        "403",
        "operator_only",
        "a resident's or manager's token: only connecX operators see or change connections",
    ),
    answer(
        Gate::ResidentWrite,
        "429",
        "too_many_requests",
        "a resident sent too many booking writes in a short time",
    ),
    answer(
        Gate::ManagersOnly,
        "403",
        "managers_only",
        "a resident's token: only the building's managers may do this",
    ),
    answer(
        Gate::JsonBody,
        "400",
        "malformed_json",
        "the body is not valid JSON",
    ),
    answer(
        Gate::JsonBody,
        "400",
        "unreadable_body",
        "the body could not be read to its end",
    ),
    answer(
        Gate::JsonBody,
        "413",
        "payload_too_large",
        "the body is larger than 64 KiB",
    ),
    answer(
        Gate::JsonBody,
        "415",
        "unsupported_media_type",
        "no `Content-Type: application/json` (or another `application/*+json`)",
    ),
    answer(
        Gate::JsonBody,
        "422",
        "invalid_body",
        "the body is JSON but not an object, or not of the documented shape",
    ),
    answer(
        Gate::JsonBody,
        "422",
        "missing_field",
        "a required field is missing (`field` names it)",
    ),
    answer(
        Gate::JsonBody,
        "422",
        "unknown_field",
        "a field the schema does not list (`field` names it)",
    ),
    answer(
        Gate::JsonBody,
        "422",
        "invalid_value",
        "a field of the wrong type or format (`field` names it)",
    ),
    answer(
        Gate::JsonBody,
        "422",
        "validation_failed",
        "several fields break their rules (`errors` lists each field with its own code); with one, the answer carries that field's code and `field`",
    ),
    answer(
        Gate::EntityIdPath,
        "400",
        "invalid_path",
        "the path could not be read (not UTF-8 once decoded)",
    ),
    answer(
        Gate::EntityIdPath,
        "404",
        "route_not_found",
        "an empty id (or one that changes the path) names no resource",
    ),
    answer(
        Gate::EntityIdPath,
        "422",
        "invalid_id",
        "the id is not `[A-Za-z0-9_-]{1,64}` (`field` is `id`)",
    ),
    answer(
        Gate::BookingIdPath,
        "404",
        "booking_not_found",
        "no such booking: not a UUID, another building's booking, or none with this id",
    ),
    answer(
        Gate::BookingIdPath,
        "404",
        "route_not_found",
        "an empty id names no resource",
    ),
    answer(
        Gate::IdempotencyKey,
        "400",
        "invalid_idempotency_key",
        "`Idempotency-Key` is not 1 to 255 visible ASCII characters",
    ),
    answer(
        Gate::Database,
        "503",
        "database_unavailable",
        "PostgreSQL is out of reach or dropped the request's connection; retry after `Retry-After` seconds (nothing was changed unless the commit itself was cut, so a creation is retried with the same `Idempotency-Key`)",
    ),
];

/// Headers a route declares that go with every answer of their status: utoipa 6's `Header` has
/// no `required`, so [`mark_required`] writes it. (A route whose 503 never says when to retry,
/// e.g. `secrets_not_configured`, declares no `Retry-After`; the database's 503 adds one that is
/// then optional.)
const ALWAYS_SENT: &[(&str, &str)] = &[
    ("201", "Location"),
    ("429", "Retry-After"),
    ("503", "Retry-After"),
];

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            // Each operation, and whether it writes.
            let operations = [
                (&mut item.get, false),
                (&mut item.put, true),
                (&mut item.post, true),
                (&mut item.delete, true),
                (&mut item.patch, true),
            ];
            for (operation, writes) in operations {
                let Some(operation) = operation else {
                    continue;
                };
                mark_always_sent(operation);
                let answers = common_answers(path, writes, operation);
                add_answers(operation, &answers);
                add_headers(operation);
            }
        }
    }
}

/// What `operation` at `path` answers because of its shape (`writes`: not a GET): the answers
/// of the gates in front of it, in the order a request meets them.
fn common_answers(path: &str, writes: bool, operation: &Operation) -> Vec<Answer> {
    gates(path, writes, operation)
        .into_iter()
        .flat_map(|gate| ANSWERS.iter().filter(move |answer| answer.gate == gate))
        .copied()
        .collect()
}

/// The gates in front of `operation` at `path`.
fn gates(path: &str, writes: bool, operation: &Operation) -> Vec<Gate> {
    let mut gates = vec![Gate::EveryRoute];
    if let Some(roles) = bearer_roles(operation) {
        gates.push(Gate::Token);
        if writes && roles.iter().any(|role| role == "resident") {
            gates.push(Gate::ResidentWrite);
        }
        if roles.iter().any(|role| role == "operator") {
            gates.push(Gate::OperatorOnly);
        } else {
            gates.push(Gate::NotForOperators);
            if roles.iter().all(|role| role == "manager") {
                gates.push(Gate::ManagersOnly);
            }
        }
    }
    if operation.request_body.is_some() {
        gates.push(Gate::JsonBody);
    }
    let parameters = operation.parameters.iter().flatten();
    for parameter in parameters {
        let RefOr::T(parameter) = parameter else {
            continue;
        };
        match parameter.parameter_in {
            ParameterIn::Path if is_uuid(parameter.schema.as_ref()) => {
                gates.push(Gate::BookingIdPath);
            }
            ParameterIn::Path => gates.push(Gate::EntityIdPath),
            ParameterIn::Header if parameter.name.eq_ignore_ascii_case("Idempotency-Key") => {
                gates.push(Gate::IdempotencyKey);
            }
            _ => {}
        }
    }
    if path.starts_with("/v1/") {
        gates.push(Gate::Database);
    }
    gates
}

/// The roles of the operation's bearer requirement (`None`: no token needed). OpenAPI 3.1 lets a
/// non-OAuth requirement list role names; utoipa keeps the list private, so it is read back
/// from the requirement's JSON.
fn bearer_roles(operation: &Operation) -> Option<Vec<String>> {
    operation.security.iter().flatten().find_map(|requirement| {
        let value = serde_json::to_value(requirement).ok()?;
        let roles = value.get(BEARER)?.as_array()?;
        Some(
            roles
                .iter()
                .filter_map(|role| role.as_str().map(str::to_owned))
                .collect(),
        )
    })
}

fn is_uuid(schema: Option<&RefOr<Schema>>) -> bool {
    matches!(
        schema,
        Some(RefOr::T(Schema::Object(object)))
            if object.format == Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))
    )
}

/// Adds `answers` to the operation's responses: a status the annotation does not list gets a
/// problem+json response naming each code; one it lists keeps its own description (the codes of
/// its domain) followed by these codes.
fn add_answers(operation: &mut Operation, answers: &[Answer]) {
    let mut by_status: BTreeMap<&str, Vec<&Answer>> = BTreeMap::new();
    for answer in answers {
        let codes = by_status.entry(answer.status).or_default();
        if !codes.contains(&answer) {
            codes.push(answer);
        }
    }
    for (status, codes) in by_status {
        let listed: Vec<String> = codes
            .iter()
            .map(|a| format!("`{}`: {}", a.code, a.meaning))
            .collect();
        let listed = listed.join("; ");
        let responses = &mut operation.responses.responses;
        let declared = responses.contains_key(status);
        let RefOr::T(response) = responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(Response::new("")))
        else {
            continue;
        };
        response.description = if response.description.is_empty() {
            listed
        } else {
            format!(
                "{}. Also {listed}",
                response.description.trim_end_matches('.')
            )
        };
        if response.content.is_empty() {
            response
                .content
                .insert(PROBLEM_JSON.to_owned(), problem_content());
        }
        if status == "503" {
            // Only the database's 503 always says when to retry; another 503 the route declares
            // (e.g. `secrets_not_configured`) comes without it.
            response
                .headers
                .entry("Retry-After".to_owned())
                .or_insert_with(|| retry_after(!declared).into());
        }
    }
}

/// Documents the headers every answer of a status carries: the challenge of a 401, the wait of a
/// 429, and the trace of every answer.
fn add_headers(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        match status.as_str() {
            "401" => {
                response
                    .headers
                    .entry("WWW-Authenticate".to_owned())
                    .or_insert_with(|| {
                        let mut challenge = header(
                            string_schema(Some("^Bearer")),
                            "`Bearer`, with `error=\"invalid_token\"` for a bad or expired token",
                        );
                        mark_required(&mut challenge);
                        challenge.into()
                    });
            }
            "429" => {
                response
                    .headers
                    .entry("Retry-After".to_owned())
                    .or_insert_with(|| retry_after(true).into());
            }
            _ => {}
        }
        response
            .headers
            .entry("traceparent".to_owned())
            .or_insert_with(|| {
                header(
                    string_schema(Some("^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")),
                    "W3C trace context of the request (the caller's, or a new trace); it follows \
                     the request's events through every service",
                )
                .into()
            });
    }
}

/// Marks the headers a route declares in [`ALWAYS_SENT`] required.
fn mark_always_sent(operation: &mut Operation) {
    for (status, name) in ALWAYS_SENT {
        if let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status)
            && let Some(RefOr::T(header)) = response.headers.get_mut(*name)
        {
            mark_required(header);
        }
    }
}

fn retry_after(required: bool) -> Header {
    let mut header = header(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1)),
        "Seconds to wait before sending the request again",
    );
    if required {
        mark_required(&mut header);
    }
    header
}

fn header(schema: ObjectBuilder, description: &str) -> Header {
    let mut header = Header::new(schema);
    header.description = Some(description.to_owned());
    header
}

fn mark_required(header: &mut Header) {
    header
        .extensions
        .get_or_insert_with(Default::default)
        .insert("required".to_owned(), serde_json::Value::Bool(true));
}

fn string_schema(pattern: Option<&str>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(pattern)
}

fn problem_content() -> RefOr<Content> {
    RefOr::T(Content::new(Some(Ref::from_schema_name("Problem"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    fn statuses(doc: &Value, path: &str, method: &str) -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is not documented"))
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn every_operation_has_its_own_operation_id() {
        let doc = document();
        let mut ids = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap_or_default();
                assert!(!id.is_empty(), "{method} {path} has no operationId");
                assert!(!ids.contains(&id.to_owned()), "{id} is used twice");
                ids.push(id.to_owned());
            }
        }
    }

    #[test]
    fn a_booking_creation_lists_what_its_token_body_key_and_database_can_answer() {
        let doc = document();
        let listed = statuses(&doc, "/v1/visitor-bookings", "post");
        for status in [
            "201", "400", "401", "403", "408", "413", "415", "422", "429", "500", "503",
        ] {
            assert!(
                listed.contains(&status.to_owned()),
                "{status} in {listed:?}"
            );
        }
        let post = &doc["paths"]["/v1/visitor-bookings"]["post"]["responses"];
        assert_eq!(post["401"]["headers"]["WWW-Authenticate"]["required"], true);
        assert_eq!(post["429"]["headers"]["Retry-After"]["required"], true);
        assert_eq!(post["503"]["headers"]["Retry-After"]["required"], true);
        assert_eq!(post["201"]["headers"]["Location"]["required"], true);
        let bad_request = post["400"]["description"].as_str().unwrap();
        assert!(
            bad_request.contains("invalid_idempotency_key"),
            "{bad_request}"
        );
        let unavailable = post["503"]["description"].as_str().unwrap();
        assert!(
            unavailable.contains("database_unavailable"),
            "{unavailable}"
        );
    }

    #[test]
    fn a_route_s_own_answers_are_kept_and_the_common_ones_added() {
        let doc = document();
        let put = &doc["paths"]["/v1/buildings/{id}/connections/salto"]["put"]["responses"];
        let unavailable = put["503"]["description"].as_str().unwrap();
        assert!(
            unavailable.contains("secrets_not_configured"),
            "{unavailable}"
        );
        assert!(
            unavailable.contains("database_unavailable"),
            "{unavailable}"
        );
        // `secrets_not_configured` comes without a Retry-After.
        assert_eq!(put["503"]["headers"]["Retry-After"].get("required"), None);
        let forbidden = put["403"]["description"].as_str().unwrap();
        assert!(forbidden.contains("operator_only"), "{forbidden}");
        assert!(
            put["422"]["description"]
                .as_str()
                .unwrap()
                .contains("invalid_id")
        );
    }

    #[test]
    fn the_schemas_state_the_limits_the_code_checks() {
        use crate::connections::MAX_SALTO_TIMEOUT_SECS;
        use crate::domain::validation::{
            MAX_EXTERNAL_ID_LEN, MAX_NAME_LEN, MAX_SECRET_LEN, MAX_URL_LEN,
        };
        let doc = document();
        let property = |schema: &str, name: &str| {
            doc["components"]["schemas"][schema]["properties"][name].clone()
        };
        for (schema, name, max) in [
            ("VisitorInput", "name", MAX_NAME_LEN),
            ("BuildingRequest", "name", MAX_NAME_LEN),
            ("FacilityRequest", "name", MAX_NAME_LEN),
            ("ResidentRequest", "name", MAX_NAME_LEN),
            ("BuildingRequest", "ipassan_site", MAX_EXTERNAL_ID_LEN),
            ("ApartmentRequest", "access_control_id", MAX_EXTERNAL_ID_LEN),
            (
                "FacilityRequest",
                "access_control_facility_id",
                MAX_EXTERNAL_ID_LEN,
            ),
            ("ResidentRequest", "ipassan_person_id", MAX_EXTERNAL_ID_LEN),
            ("IpassanConnectionRequest", "client_id", MAX_EXTERNAL_ID_LEN),
            ("IpassanConnectionRequest", "site", MAX_EXTERNAL_ID_LEN),
            ("SaltoConnectionRequest", "username", MAX_EXTERNAL_ID_LEN),
            ("IpassanConnectionRequest", "client_secret", MAX_SECRET_LEN),
            ("SaltoConnectionRequest", "password", MAX_SECRET_LEN),
            ("SaltoConnectionRequest", "key", MAX_SECRET_LEN),
            ("IpassanConnectionRequest", "base_url", MAX_URL_LEN),
            ("SaltoConnectionRequest", "url", MAX_URL_LEN),
        ] {
            let property = property(schema, name);
            assert_eq!(property["maxLength"], max, "{schema}.{name}: {property}");
            assert_eq!(property["minLength"], 1, "{schema}.{name}: {property}");
            assert_eq!(
                property["pattern"], r"^[^\u0000-\u001F\u007F-\u009F]*$",
                "{schema}.{name}: no control characters"
            );
        }
        let timeout = property("SaltoConnectionRequest", "timeout_secs");
        assert_eq!(timeout["minimum"], 1);
        assert_eq!(timeout["maximum"], MAX_SALTO_TIMEOUT_SECS);
        let id = &doc["components"]["schemas"]["BuildingId"]["pattern"];
        assert_eq!(
            id.as_str(),
            Some(format!("^[A-Za-z0-9_-]{{1,{}}}$", crate::domain::ids::MAX_ID_LEN).as_str())
        );
    }

    #[test]
    fn operations_without_a_token_or_database_list_only_what_they_can_answer() {
        let doc = document();
        assert_eq!(statuses(&doc, "/healthz", "get"), ["200", "408", "500"]);
        let ready = &doc["paths"]["/readyz"]["get"]["responses"];
        assert_eq!(ready["503"]["headers"]["Retry-After"]["required"], true);
        let get = statuses(&doc, "/v1/visitor-bookings/{id}", "get");
        assert!(
            !get.contains(&"422".to_owned()),
            "a booking id is a UUID: {get:?}"
        );
        assert!(!get.contains(&"415".to_owned()), "no body: {get:?}");
    }
}
