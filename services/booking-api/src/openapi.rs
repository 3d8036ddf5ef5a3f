//! The OpenAPI document served at `/openapi.json` (and browsed at `/docs`).

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{admin, connections, facility_bookings, health, visitor_bookings};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "connecX booking API",
        description = "Visitor and facility bookings, the building directory, and buildings' connections to their access-control systems. Errors are RFC 9457 problem+json with a stable `code`."
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
    components(schemas(crate::problem::ProblemDetails, crate::domain::validation::FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "visitor bookings", description = "A resident expects a visitor; optionally with a PIN"),
        (name = "facility bookings", description = "An apartment books a facility for part of a day"),
        (name = "admin", description = "Managers keep the building's directory"),
        (name = "connections", description = "Operators connect a building to its own iPassan tenant and Salto SHIP endpoint; secrets are sealed and never shown"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}
