//! A building's own connections to iPassan and Salto (operators only). `PUT` stores the
//! connection (secrets sealed) as its next version and, in the same transaction, puts
//! `ipassan_connection.changed.v1` / `salto_connection.changed.v1` in the outbox for the worker
//! that uses the system; `GET` shows it without secrets; `DELETE` puts the building back on the
//! deployment default. A manager's `PUT /v1/buildings/{id}` never touches any of this.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use contracts::{
    AccessSystem, Envelope, Event, IpassanConnection, IpassanConnectionChange, SaltoConnection,
    SaltoConnectionChange, connection_subject,
};
use serde::Serialize;

use super::json_response;
use crate::auth::Operator;
use crate::connections::{
    self, CheckError, CheckView, IpassanConnectionRequest, IpassanConnectionView,
    SaltoConnectionRequest, SaltoConnectionView, UnreadableConnection,
};
use crate::domain::ids::BuildingId;
use crate::extract::{ApiJson, EntityIdPath};
use crate::problem::{Problem, ProblemDetails};
use crate::state::AppState;
use crate::store::connections::{self as store, ConnectionRow};

/// What differs between a building's own iPassan and Salto connections, for the handlers both
/// share.
trait SystemConnection {
    const SYSTEM: AccessSystem;
    /// The connection as stored and published: its secrets sealed.
    type Sealed: Serialize;
    /// The connection as an answer shows it: no secret, only whether one is set.
    type View: Serialize;

    fn view(row: &ConnectionRow) -> Result<Option<Self::View>, UnreadableConnection>;
    /// The event that tells the system's worker; `None`: back to the deployment default.
    fn changed(building_id: String, connection: Option<Self::Sealed>) -> Event;
}

struct Ipassan;

impl SystemConnection for Ipassan {
    const SYSTEM: AccessSystem = AccessSystem::Ipassan;
    type Sealed = IpassanConnection;
    type View = IpassanConnectionView;

    fn view(row: &ConnectionRow) -> Result<Option<IpassanConnectionView>, UnreadableConnection> {
        connections::ipassan_view(row)
    }

    fn changed(building_id: String, connection: Option<IpassanConnection>) -> Event {
        Event::IpassanConnectionChanged(IpassanConnectionChange {
            building_id,
            connection,
        })
    }
}

struct Salto;

impl SystemConnection for Salto {
    const SYSTEM: AccessSystem = AccessSystem::Salto;
    type Sealed = SaltoConnection;
    type View = SaltoConnectionView;

    fn view(row: &ConnectionRow) -> Result<Option<SaltoConnectionView>, UnreadableConnection> {
        connections::salto_view(row)
    }

    fn changed(building_id: String, connection: Option<SaltoConnection>) -> Event {
        Event::SaltoConnectionChanged(SaltoConnectionChange {
            building_id,
            connection,
        })
    }
}

fn not_connected(app: &AppState, building_id: &str, system: AccessSystem) -> Problem {
    let has_default = match system {
        AccessSystem::Ipassan => app.defaults.ipassan,
        AccessSystem::Salto => app.defaults.salto,
    };
    let uses = if has_default {
        format!("uses the deployment's default {system}")
    } else {
        format!("is connected to no {system} (and the deployment has no default)")
    };
    Problem::not_found(
        "not_connected",
        format!("building {building_id} has no {system} connection of its own; it {uses}"),
    )
}

fn secrets_not_configured() -> Problem {
    Problem::unavailable(
        "secrets_not_configured",
        "CONNECX__SECRETS__KEY is not set on booking-api, so connection secrets cannot be sealed; \
         ops must set it (see the README's Configuration)",
    )
}

fn unreadable(error: &connections::UnreadableConnection) -> Problem {
    Problem::internal(error)
}

fn status_after(saved: store::Saved) -> StatusCode {
    if saved.was_connected {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

/// Saves `settings` (`None`: back to the default) as the next version with its event.
async fn save(
    app: &AppState,
    operator: &Operator,
    building_id: &str,
    system: AccessSystem,
    settings: Option<serde_json::Value>,
    event: Event,
) -> Result<(store::Saved, ConnectionRow), Problem> {
    let mut tx = app.pool.begin().await?;
    let saved = store::save(
        &mut tx,
        building_id,
        system,
        settings.as_ref(),
        &operator.user_id,
    )
    .await?;
    let envelope = Envelope::new(
        connection_subject(building_id, system),
        saved.version,
        event,
    );
    crate::outbox::enqueue(&mut tx, &envelope).await?;
    let row = store::find(&mut *tx, building_id, system)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    app.relay_wake.committed();
    tracing::info!(
        building_id, %system, version = saved.version, operator = %operator.user_id,
        connected = row.settings.is_some(), "building connection changed"
    );
    Ok((saved, row))
}

/// Connects a building to its own iPassan tenant.
#[utoipa::path(
    put, path = "/v1/buildings/{id}/connections/ipassan", tag = "connections",
    params(("id" = BuildingId, Path, description = "connecX building id")),
    request_body = IpassanConnectionRequest,
    responses(
        (status = 200, description = "Replaced", body = IpassanConnectionView),
        (status = 201, description = "The building had no iPassan connection of its own", body = IpassanConnectionView),
        (status = 422, description = "A field breaks its rule: `required`, `too_long`, `invalid_characters`, `invalid_url`, `credentials_in_url`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "`secrets_not_configured`: booking-api has no `CONNECX__SECRETS__KEY` to seal the secret with", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["operator"]))
)]
pub async fn put_ipassan(
    State(app): State<AppState>,
    operator: Operator,
    EntityIdPath(building_id): EntityIdPath,
    body: ApiJson<IpassanConnectionRequest>,
) -> Result<Response, Problem> {
    let checked = connections::validate_ipassan(&body.value).map_err(Problem::validation)?;
    let sealer = app.sealer.as_deref().ok_or_else(secrets_not_configured)?;
    connect::<Ipassan>(&app, &operator, &building_id, checked.seal(sealer)).await
}

/// Connects a building to its own Salto SHIP endpoint.
#[utoipa::path(
    put, path = "/v1/buildings/{id}/connections/salto", tag = "connections",
    params(("id" = BuildingId, Path, description = "connecX building id")),
    request_body = SaltoConnectionRequest,
    responses(
        (status = 200, description = "Replaced", body = SaltoConnectionView),
        (status = 201, description = "The building had no Salto connection of its own", body = SaltoConnectionView),
        (status = 422, description = "A field breaks its rule: `required` (e.g. `key` for auth_kind `key`), `not_for_this_auth_kind`, `out_of_range`, `too_long`, `invalid_characters`, `invalid_url`, `credentials_in_url`", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "`secrets_not_configured`: booking-api has no `CONNECX__SECRETS__KEY` to seal the secret with", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["operator"]))
)]
pub async fn put_salto(
    State(app): State<AppState>,
    operator: Operator,
    EntityIdPath(building_id): EntityIdPath,
    body: ApiJson<SaltoConnectionRequest>,
) -> Result<Response, Problem> {
    let checked = connections::validate_salto(&body.value).map_err(Problem::validation)?;
    if checked.has_secret() && app.sealer.is_none() {
        return Err(secrets_not_configured());
    }
    let sealed = checked.seal(app.sealer.as_deref());
    connect::<Salto>(&app, &operator, &building_id, sealed).await
}

/// `GET`, `DELETE` and the check of one system's connection, with their OpenAPI descriptions:
/// the two systems' differ only in names, so they are written once.
macro_rules! show_disconnect_and_check {
    (
        system: $system:ident,
        path: $path:literal,
        view: $view:ident,
        get: $get:ident,
        get_summary: $get_doc:literal,
        without_secrets: $without:literal,
        delete: $delete:ident,
        delete_summary: $delete_doc:literal,
        check: $check:ident,
        check_path: $check_path:literal,
        check_summary: $check_doc:literal $(,)?
    ) => {
        #[doc = $get_doc]
        #[utoipa::path(
            get, path = $path, tag = "connections",
            params(("id" = BuildingId, Path, description = "connecX building id")),
            responses(
                (status = 200, description = $without, body = $view),
                (status = 404, description = "`not_connected`: the building uses the deployment default", body = ProblemDetails, content_type = "application/problem+json"),
            ),
            security(("bearer" = ["operator"]))
        )]
        pub async fn $get(
            State(app): State<AppState>,
            _operator: Operator,
            EntityIdPath(building_id): EntityIdPath,
        ) -> Result<Response, Problem> {
            show::<$system>(&app, &building_id).await
        }

        #[doc = $delete_doc]
        #[utoipa::path(
            delete, path = $path, tag = "connections",
            params(("id" = BuildingId, Path, description = "connecX building id")),
            responses(
                (status = 204, description = "The building uses the default from now on"),
                (status = 404, description = "`not_connected`", body = ProblemDetails, content_type = "application/problem+json"),
            ),
            security(("bearer" = ["operator"]))
        )]
        pub async fn $delete(
            State(app): State<AppState>,
            operator: Operator,
            EntityIdPath(building_id): EntityIdPath,
        ) -> Result<Response, Problem> {
            disconnect::<$system>(&app, &operator, &building_id).await
        }

        #[doc = $check_doc]
        #[utoipa::path(
            post, path = $check_path, tag = "connections",
            params(("id" = BuildingId, Path, description = "connecX building id")),
            responses(
                (status = 200, description = "What the call found (`ok` false with a `problem` when something is wrong)", body = CheckView),
                (status = 404, description = "`not_connected`", body = ProblemDetails, content_type = "application/problem+json"),
                (status = 503, description = "`secrets_not_configured`: the connection's sealed secret cannot be opened with the configured keys", body = ProblemDetails, content_type = "application/problem+json"),
            ),
            security(("bearer" = ["operator"]))
        )]
        pub async fn $check(
            State(app): State<AppState>,
            operator: Operator,
            EntityIdPath(building_id): EntityIdPath,
        ) -> Result<Response, Problem> {
            check(&app, &operator, &building_id, $system::SYSTEM).await
        }
    };
}

show_disconnect_and_check! {
    system: Ipassan,
    path: "/v1/buildings/{id}/connections/ipassan",
    view: IpassanConnectionView,
    get: get_ipassan,
    get_summary: "The building's own iPassan connection, without its secret.",
    without_secrets: "The connection, without its secret",
    delete: delete_ipassan,
    delete_summary: "Puts the building back on the deployment's default iPassan.",
    check: check_ipassan,
    check_path: "/v1/buildings/{id}/connections/ipassan/check",
    check_summary: "Checks the building's own iPassan connection with one real, harmless call.",
}

show_disconnect_and_check! {
    system: Salto,
    path: "/v1/buildings/{id}/connections/salto",
    view: SaltoConnectionView,
    get: get_salto,
    get_summary: "The building's own Salto connection, without its secrets.",
    without_secrets: "The connection, without its secrets",
    delete: delete_salto,
    delete_summary: "Puts the building back on the deployment's default Salto.",
    check: check_salto,
    check_path: "/v1/buildings/{id}/connections/salto/check",
    check_summary: "Checks the building's own Salto connection with one real, harmless call.",
}

/// Stores `sealed` as the building's own connection to `S` and answers with it: 201 when the
/// building had none of its own, 200 when it replaces one.
async fn connect<S: SystemConnection>(
    app: &AppState,
    operator: &Operator,
    building_id: &str,
    sealed: S::Sealed,
) -> Result<Response, Problem> {
    let settings = serde_json::to_value(&sealed).map_err(|e| Problem::internal(&e))?;
    let event = S::changed(building_id.to_owned(), Some(sealed));
    let (saved, row) = save(app, operator, building_id, S::SYSTEM, Some(settings), event).await?;
    let view = S::view(&row).map_err(|e| unreadable(&e))?;
    Ok(json_response(status_after(saved), &view, HeaderMap::new()))
}

/// The building's own connection to `S`, without its secrets; 404 when it has none.
async fn show<S: SystemConnection>(app: &AppState, building_id: &str) -> Result<Response, Problem> {
    let row = store::find(&app.pool, building_id, S::SYSTEM).await?;
    let view = match &row {
        Some(row) => S::view(row).map_err(|e| unreadable(&e))?,
        None => None,
    };
    let view = view.ok_or_else(|| not_connected(app, building_id, S::SYSTEM))?;
    Ok(json_response(StatusCode::OK, &view, HeaderMap::new()))
}

/// Puts the building back on the deployment's default `S`; 404 when it has no connection of its
/// own.
async fn disconnect<S: SystemConnection>(
    app: &AppState,
    operator: &Operator,
    building_id: &str,
) -> Result<Response, Problem> {
    let connected = store::find(&app.pool, building_id, S::SYSTEM)
        .await?
        .is_some_and(|row| row.settings.is_some());
    if !connected {
        return Err(not_connected(app, building_id, S::SYSTEM));
    }
    let event = S::changed(building_id.to_owned(), None);
    save(app, operator, building_id, S::SYSTEM, None, event).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn check(
    app: &AppState,
    operator: &Operator,
    building_id: &str,
    system: AccessSystem,
) -> Result<Response, Problem> {
    let row = store::find(&app.pool, building_id, system)
        .await?
        .ok_or_else(|| not_connected(app, building_id, system))?;
    let sealer = app.sealer.as_deref();
    let checked = match system {
        AccessSystem::Ipassan => connections::check_ipassan(&row, sealer).await,
        AccessSystem::Salto => connections::check_salto(&row, sealer).await,
    };
    let view: CheckView = match checked {
        Ok(Some(view)) => view,
        Ok(None) => return Err(not_connected(app, building_id, system)),
        Err(CheckError::Secret(error)) => {
            return Err(Problem::unavailable(
                "secrets_not_configured",
                format!("the connection's secret cannot be opened: {error}"),
            ));
        }
        Err(error) => return Err(Problem::internal(&error)),
    };
    tracing::info!(
        building_id, %system, operator = %operator.user_id, ok = view.ok,
        problem = ?view.problem, latency_ms = view.latency_ms, "connection checked"
    );
    Ok(json_response(StatusCode::OK, &view, HeaderMap::new()))
}
