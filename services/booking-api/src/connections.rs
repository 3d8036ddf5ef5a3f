//! A building's own connections to iPassan and Salto (docs/architecture.md, "Many buildings"):
//! what an operator sends, the checks it must pass, the sealed form it is stored and published
//! in, and what an answer may show of it — never a secret, only whether one is set.
//!
//! Requests are validated by plain functions ([`validate_ipassan`], [`validate_salto`]) that name
//! every field at fault; sealing needs the [`Sealer`] of `CONNECX__SECRETS__KEY`. A stored
//! connection is checked against the real system with one harmless call ([`check_ipassan`],
//! [`check_salto`]).

use chrono::{DateTime, Utc};
use contracts::{
    AccessSystem, IpassanConnection, SaltoAuthKind, SaltoConnection, SealedSecret, sealed_fields,
};
use platform::secrets::{OpenError, Sealer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::validation::{self, FieldError, FieldErrors};
use crate::store::connections::ConnectionRow;

/// Default seconds one SHIP call may take.
pub const DEFAULT_SALTO_TIMEOUT_SECS: u64 = 10;
/// The longest a SHIP call may be allowed (the service's own default's bound).
pub const MAX_SALTO_TIMEOUT_SECS: u64 = 300;

/// `PUT /v1/buildings/{id}/connections/ipassan`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IpassanConnectionRequest {
    /// The tenant's API, e.g. `https://tenant.ipassan.com`: `http://` or `https://` with a host
    /// and no credentials; at most 2048 bytes.
    #[schema(
        min_length = 1,
        max_length = 2048,
        format = "uri",
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub base_url: String,
    /// OAuth2 client credentials iPassan issued for connecX. Not blank; at most 128 characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub client_id: String,
    /// Sealed at once; never shown again. Not blank; at most 4096 bytes.
    // Read as optional so that its absence is named (`required`) like any other field rule.
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub client_secret: Option<String>,
    /// The building's iPassan site (it wins over the building's `ipassan_site`). Not blank; at
    /// most 128 characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub site: String,
}

/// How the SHIP endpoint authenticates connecX.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaltoAuth {
    #[default]
    None,
    /// HTTP Basic (`username`, `password`).
    Basic,
    /// Header `Salto-SHIP-Key` (`key`).
    Key,
}

impl From<SaltoAuth> for SaltoAuthKind {
    fn from(auth: SaltoAuth) -> Self {
        match auth {
            SaltoAuth::None => SaltoAuthKind::None,
            SaltoAuth::Basic => SaltoAuthKind::Basic,
            SaltoAuth::Key => SaltoAuthKind::Key,
        }
    }
}

impl From<SaltoAuthKind> for SaltoAuth {
    fn from(auth: SaltoAuthKind) -> Self {
        match auth {
            SaltoAuthKind::None => SaltoAuth::None,
            SaltoAuthKind::Basic => SaltoAuth::Basic,
            SaltoAuthKind::Key => SaltoAuth::Key,
        }
    }
}

/// `PUT /v1/buildings/{id}/connections/salto`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaltoConnectionRequest {
    /// The SHIP endpoint, e.g. `https://salto.building.example:8090/`: `http://` or `https://`
    /// with a host and no credentials; at most 2048 bytes.
    #[schema(
        min_length = 1,
        max_length = 2048,
        format = "uri",
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub url: String,
    /// `none` (default), `basic` (needs `username` and `password`) or `key` (needs `key`); a
    /// secret the kind does not use is a 422 `not_for_this_auth_kind`.
    #[serde(default)]
    pub auth_kind: SaltoAuth,
    /// For `basic`. Not blank; at most 128 characters.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub username: Option<String>,
    /// For `basic`; sealed at once, never shown again. Not blank; at most 4096 bytes.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub password: Option<String>,
    /// For `key`; sealed at once, never shown again. Not blank; at most 4096 bytes.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 4096,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub key: Option<String>,
    /// Seconds one SHIP call may take (default 10).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 300)]
    pub timeout_secs: Option<u64>,
}

/// An iPassan connection that passed the checks, its secret still in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedIpassan {
    pub base_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub site: String,
}

/// A Salto connection that passed the checks, its secrets still in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSalto {
    pub url: String,
    pub auth_kind: SaltoAuth,
    pub username: Option<String>,
    pub password: Option<String>,
    pub key: Option<String>,
    pub timeout_secs: u64,
}

impl CheckedSalto {
    /// Whether anything must be sealed.
    pub fn has_secret(&self) -> bool {
        self.password.is_some() || self.key.is_some()
    }
}

/// Checks an iPassan connection, naming every field at fault.
pub fn validate_ipassan(
    request: &IpassanConnectionRequest,
) -> Result<CheckedIpassan, Vec<FieldError>> {
    let mut errors = FieldErrors::new();
    let base_url = errors.check("base_url", validation::endpoint_url(&request.base_url));
    let client_id = errors.check("client_id", validation::external_id(&request.client_id));
    let client_secret = errors.check(
        "client_secret",
        validation::secret(request.client_secret.as_deref()),
    );
    let site = errors.check("site", validation::external_id(&request.site));
    match (base_url, client_id, client_secret, site) {
        (Some(base_url), Some(client_id), Some(client_secret), Some(site)) if errors.is_empty() => {
            Ok(CheckedIpassan {
                base_url,
                client_id,
                client_secret,
                site,
            })
        }
        _ => Err(errors.into_vec()),
    }
}

/// Checks a Salto connection: the URL, the secrets its `auth_kind` needs (and no others), and the
/// timeout.
pub fn validate_salto(request: &SaltoConnectionRequest) -> Result<CheckedSalto, Vec<FieldError>> {
    let mut errors = FieldErrors::new();
    let url = errors.check("url", validation::endpoint_url(&request.url));
    let timeout_secs = request.timeout_secs.unwrap_or(DEFAULT_SALTO_TIMEOUT_SECS);
    if !(1..=MAX_SALTO_TIMEOUT_SECS).contains(&timeout_secs) {
        errors.push(FieldError::new(
            "timeout_secs",
            "out_of_range",
            format!("must be between 1 and {MAX_SALTO_TIMEOUT_SECS} seconds"),
        ));
    }
    let not_for = |field: &str, given: bool, errors: &mut FieldErrors| {
        if given {
            errors.push(FieldError::new(
                field,
                "not_for_this_auth_kind",
                format!(
                    "is not used with auth_kind `{}`; leave it out",
                    auth_name(request.auth_kind)
                ),
            ));
        }
    };
    let (mut username, mut password, mut key) = (None, None, None);
    match request.auth_kind {
        SaltoAuth::None => {
            not_for("username", request.username.is_some(), &mut errors);
            not_for("password", request.password.is_some(), &mut errors);
            not_for("key", request.key.is_some(), &mut errors);
        }
        SaltoAuth::Basic => {
            username = errors.check(
                "username",
                validation::external_id(request.username.as_deref().unwrap_or_default()),
            );
            password = errors.check("password", validation::secret(request.password.as_deref()));
            not_for("key", request.key.is_some(), &mut errors);
        }
        SaltoAuth::Key => {
            key = errors.check("key", validation::secret(request.key.as_deref()));
            not_for("username", request.username.is_some(), &mut errors);
            not_for("password", request.password.is_some(), &mut errors);
        }
    }
    match url {
        Some(url) if errors.is_empty() => Ok(CheckedSalto {
            url,
            auth_kind: request.auth_kind,
            username,
            password,
            key,
            timeout_secs,
        }),
        _ => Err(errors.into_vec()),
    }
}

fn auth_name(auth: SaltoAuth) -> &'static str {
    match auth {
        SaltoAuth::None => "none",
        SaltoAuth::Basic => "basic",
        SaltoAuth::Key => "key",
    }
}

impl CheckedIpassan {
    /// The connection as stored and published: the secret sealed.
    pub fn seal(self, sealer: &Sealer) -> IpassanConnection {
        IpassanConnection {
            client_secret: sealer.seal(&self.client_secret, sealed_fields::IPASSAN_CLIENT_SECRET),
            base_url: self.base_url,
            client_id: self.client_id,
            site: self.site,
        }
    }
}

impl CheckedSalto {
    /// The connection as stored and published: the secrets sealed. `sealer` may be `None` only
    /// when there is no secret ([`CheckedSalto::has_secret`]).
    pub fn seal(self, sealer: Option<&Sealer>) -> SaltoConnection {
        let seal = |secret: Option<String>, field: &str| {
            secret.and_then(|s| sealer.map(|sealer| sealer.seal(&s, field)))
        };
        SaltoConnection {
            password: seal(self.password, sealed_fields::SALTO_PASSWORD),
            key: seal(self.key, sealed_fields::SALTO_KEY),
            url: self.url,
            auth_kind: self.auth_kind.into(),
            username: self.username,
            timeout_secs: self.timeout_secs,
        }
    }
}

/// What an answer shows of an iPassan connection.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IpassanConnectionView {
    pub building_id: String,
    pub base_url: String,
    pub client_id: String,
    /// A client secret is stored (sealed); it is never shown.
    pub client_secret_set: bool,
    pub site: String,
    /// +1 with every change of the building's iPassan connection.
    pub version: i64,
    pub updated_at: DateTime<Utc>,
    /// The operator who made the change.
    pub updated_by: String,
}

/// What an answer shows of a Salto connection.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SaltoConnectionView {
    pub building_id: String,
    pub url: String,
    pub auth_kind: SaltoAuth,
    pub username: Option<String>,
    /// A password is stored (sealed); it is never shown.
    pub password_set: bool,
    /// A SHIP key is stored (sealed); it is never shown.
    pub key_set: bool,
    pub timeout_secs: u64,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// A stored row whose settings do not read as the connection they should be.
#[derive(Debug, thiserror::Error)]
#[error("the stored {system} connection of building {building_id} cannot be read: {reason}")]
pub struct UnreadableConnection {
    pub building_id: String,
    pub system: String,
    pub reason: String,
}

fn unreadable(row: &ConnectionRow, reason: impl ToString) -> UnreadableConnection {
    UnreadableConnection {
        building_id: row.building_id.clone(),
        system: row.system.clone(),
        reason: reason.to_string(),
    }
}

/// The stored connection of `row` (secrets sealed); `None` when the building is on the default.
fn stored<T: DeserializeOwned>(row: &ConnectionRow) -> Result<Option<T>, UnreadableConnection> {
    row.settings
        .as_ref()
        .map(|settings| serde_json::from_value(settings.clone()).map_err(|e| unreadable(row, e)))
        .transpose()
}

/// The view of a stored iPassan connection; `None` when the building is on the default.
pub fn ipassan_view(
    row: &ConnectionRow,
) -> Result<Option<IpassanConnectionView>, UnreadableConnection> {
    let Some(stored) = stored::<IpassanConnection>(row)? else {
        return Ok(None);
    };
    Ok(Some(IpassanConnectionView {
        building_id: row.building_id.clone(),
        base_url: stored.base_url,
        client_id: stored.client_id,
        client_secret_set: !stored.client_secret.0.is_empty(),
        site: stored.site,
        version: row.version,
        updated_at: row.updated_at,
        updated_by: row.updated_by.clone(),
    }))
}

/// The view of a stored Salto connection; `None` when the building is on the default.
pub fn salto_view(
    row: &ConnectionRow,
) -> Result<Option<SaltoConnectionView>, UnreadableConnection> {
    let Some(stored) = stored::<SaltoConnection>(row)? else {
        return Ok(None);
    };
    Ok(Some(SaltoConnectionView {
        building_id: row.building_id.clone(),
        url: stored.url,
        auth_kind: stored.auth_kind.into(),
        username: stored.username,
        password_set: stored.password.is_some(),
        key_set: stored.key.is_some(),
        timeout_secs: stored.timeout_secs,
        version: row.version,
        updated_at: row.updated_at,
        updated_by: row.updated_by.clone(),
    }))
}

/// The sealed secrets a stored connection holds, with the field each is sealed for.
fn sealed_secrets_mut(
    system: AccessSystem,
    settings: &mut Value,
) -> Vec<(&'static str, &mut Value)> {
    let Some(object) = settings.as_object_mut() else {
        return Vec::new();
    };
    let fields: &[(&str, &'static str)] = match system {
        AccessSystem::Ipassan => &[("client_secret", sealed_fields::IPASSAN_CLIENT_SECRET)],
        AccessSystem::Salto => &[
            ("password", sealed_fields::SALTO_PASSWORD),
            ("key", sealed_fields::SALTO_KEY),
        ],
    };
    object
        .iter_mut()
        .filter_map(|(name, value)| {
            let (_, field) = fields.iter().find(|(n, _)| n == name)?;
            value.is_string().then_some((*field, value))
        })
        .collect()
}

/// `POST /v1/buildings/{id}/connections/{system}/check`: what one harmless call found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckView {
    /// The system answered as it should, and took the credentials (and, for iPassan, the site).
    pub ok: bool,
    /// What is wrong, when something is.
    pub problem: Option<CheckProblem>,
    /// In words (never a secret).
    pub detail: String,
    /// How long the call took.
    pub latency_ms: u64,
}

/// The `problem` of a connection check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckProblem {
    Unreachable,
    Timeout,
    CredentialsRefused,
    SiteNotFound,
    ProtocolError,
}

impl From<contracts::ConnectionProblem> for CheckProblem {
    fn from(problem: contracts::ConnectionProblem) -> Self {
        use contracts::ConnectionProblem as P;
        match problem {
            P::Unreachable => CheckProblem::Unreachable,
            P::Timeout => CheckProblem::Timeout,
            P::CredentialsRefused => CheckProblem::CredentialsRefused,
            P::SiteNotFound => CheckProblem::SiteNotFound,
            P::ProtocolError => CheckProblem::ProtocolError,
        }
    }
}

/// How long the check of an iPassan connection may take (the API has no timeout of its own).
pub const IPASSAN_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Checks a stored iPassan connection with one harmless call. `Err` when the stored connection
/// cannot be used at all (its secret does not open).
pub async fn check_ipassan(
    row: &ConnectionRow,
    sealer: Option<&Sealer>,
) -> Result<Option<CheckView>, CheckError> {
    let Some(stored) = stored::<IpassanConnection>(row).map_err(CheckError::Unreadable)? else {
        return Ok(None);
    };
    let secret = platform::secrets::open_with(
        sealer,
        &stored.client_secret,
        sealed_fields::IPASSAN_CLIENT_SECRET,
    )
    .map_err(CheckError::Secret)?;
    let client = ipassan_client::IpassanClient::new(&ipassan_client::TenantSettings {
        base_url: stored.base_url.clone(),
        client_id: stored.client_id.clone(),
        client_secret: secret.secret.expose().to_owned(),
        timeout: IPASSAN_CHECK_TIMEOUT,
    })
    .map_err(|e| CheckError::Client(e.to_string()))?;
    let fine = format!(
        "iPassan at {} accepted connecX for site {}",
        stored.base_url, stored.site
    );
    Ok(Some(timed_check(client.check(&stored.site), &fine).await))
}

/// Checks a stored Salto connection with one harmless call (the first zone of the zone list).
pub async fn check_salto(
    row: &ConnectionRow,
    sealer: Option<&Sealer>,
) -> Result<Option<CheckView>, CheckError> {
    let Some(stored) = stored::<SaltoConnection>(row).map_err(CheckError::Unreadable)? else {
        return Ok(None);
    };
    let open = |sealed: &Option<SealedSecret>, field: &str| -> Result<String, CheckError> {
        match sealed {
            Some(sealed) => platform::secrets::open_with(sealer, sealed, field)
                .map(|opened| opened.secret.expose().to_owned())
                .map_err(CheckError::Secret),
            None => Ok(String::new()),
        }
    };
    let auth = match stored.auth_kind {
        SaltoAuthKind::None => salto_ship::ShipAuth::None,
        SaltoAuthKind::Basic => salto_ship::ShipAuth::Basic {
            username: stored.username.clone().unwrap_or_default(),
            password: open(&stored.password, sealed_fields::SALTO_PASSWORD)?,
        },
        SaltoAuthKind::Key => {
            salto_ship::ShipAuth::Key(open(&stored.key, sealed_fields::SALTO_KEY)?)
        }
    };
    let ship = salto_ship::ShipClient::new(&salto_ship::ShipSettings {
        url: stored.url.clone(),
        auth,
        timeout: std::time::Duration::from_secs(stored.timeout_secs),
    })
    .map_err(|e| CheckError::Client(e.to_string()))?;
    let fine = format!("Salto SHIP at {} answered", stored.url);
    Ok(Some(timed_check(ship.check(), &fine).await))
}

/// What the client's harmless `call` found, and how long it took (`fine`: what success says).
async fn timed_check(
    call: impl std::future::Future<Output = Result<(), (contracts::ConnectionProblem, String)>>,
    fine: &str,
) -> CheckView {
    let started = std::time::Instant::now();
    let outcome = call.await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Ok(()) => CheckView {
            ok: true,
            problem: None,
            detail: format!("{fine} in {latency_ms} ms"),
            latency_ms,
        },
        Err((problem, detail)) => CheckView {
            ok: false,
            problem: Some(problem.into()),
            detail,
            latency_ms,
        },
    }
}

/// Why a stored connection could not even be checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Unreadable(UnreadableConnection),
    #[error("its sealed secret cannot be opened: {0}")]
    Secret(OpenError),
    #[error("cannot set up the client: {0}")]
    Client(String),
}

/// Why a service holding sealed secrets cannot use them.
#[derive(Debug, thiserror::Error)]
#[error(
    "the {system} connection of building {building_id} holds a sealed secret that cannot be opened: {reason}"
)]
pub struct UnopenableSecret {
    pub building_id: String,
    pub system: String,
    pub reason: OpenError,
}

/// Opens every sealed secret of `row` with `sealer`. Returns the settings re-sealed under the
/// current key when some secret was sealed under a previous one (to be written back).
pub fn open_all(
    row: &ConnectionRow,
    sealer: Option<&Sealer>,
) -> Result<Option<Value>, UnopenableSecret> {
    let system = match row.system.as_str() {
        "ipassan" => AccessSystem::Ipassan,
        _ => AccessSystem::Salto,
    };
    let Some(mut settings) = row.settings.clone() else {
        return Ok(None);
    };
    let mut resealed_any = false;
    for (field, value) in sealed_secrets_mut(system, &mut settings) {
        let sealed = SealedSecret(value.as_str().unwrap_or_default().to_owned());
        let opened = platform::secrets::open_with(sealer, &sealed, field).map_err(|reason| {
            UnopenableSecret {
                building_id: row.building_id.clone(),
                system: row.system.clone(),
                reason,
            }
        })?;
        if let Some(resealed) = opened.resealed {
            *value = Value::String(resealed.0);
            resealed_any = true;
        }
    }
    Ok(resealed_any.then_some(settings))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ipassan(secret: Option<&str>) -> IpassanConnectionRequest {
        IpassanConnectionRequest {
            base_url: "https://tenant.ipassan.com".into(),
            client_id: "connecx".into(),
            client_secret: secret.map(String::from),
            site: "site-7".into(),
        }
    }

    fn salto(auth_kind: SaltoAuth) -> SaltoConnectionRequest {
        SaltoConnectionRequest {
            url: "http://salto.example:8090/".into(),
            auth_kind,
            username: None,
            password: None,
            key: None,
            timeout_secs: None,
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn an_ipassan_connection_needs_its_secret_and_a_real_url() {
        assert!(validate_ipassan(&ipassan(Some("s"))).is_ok());
        let errors = validate_ipassan(&ipassan(None)).unwrap_err();
        assert_eq!(fields(&errors), ["client_secret"]);
        let mut bad = ipassan(Some("s"));
        bad.base_url = "not a url".into();
        bad.site = " ".into();
        assert_eq!(
            fields(&validate_ipassan(&bad).unwrap_err()),
            ["base_url", "site"]
        );
    }

    #[test]
    fn a_salto_connection_takes_exactly_the_secrets_of_its_auth_kind() {
        let none = validate_salto(&salto(SaltoAuth::None)).unwrap();
        assert_eq!(none.timeout_secs, DEFAULT_SALTO_TIMEOUT_SECS);
        assert!(!none.has_secret());

        let errors = validate_salto(&salto(SaltoAuth::Key)).unwrap_err();
        assert_eq!(fields(&errors), ["key"]);
        let errors = validate_salto(&salto(SaltoAuth::Basic)).unwrap_err();
        assert_eq!(fields(&errors), ["username", "password"]);

        let mut extra = salto(SaltoAuth::Key);
        extra.key = Some("k".into());
        extra.password = Some("p".into());
        extra.timeout_secs = Some(0);
        let errors = validate_salto(&extra).unwrap_err();
        assert_eq!(fields(&errors), ["timeout_secs", "password"]);
        assert_eq!(errors[1].code, "not_for_this_auth_kind");
    }

    #[test]
    fn a_stored_connection_shows_that_a_secret_is_set_never_the_secret() {
        let sealer = platform::secrets::SecretsSettings {
            key: Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()),
            previous_keys: None,
        }
        .sealer()
        .unwrap()
        .unwrap();
        let sealed = validate_ipassan(&ipassan(Some("very-secret")))
            .unwrap()
            .seal(&sealer);
        let row = ConnectionRow {
            building_id: "harbour".into(),
            system: "ipassan".into(),
            version: 3,
            settings: Some(serde_json::to_value(&sealed).unwrap()),
            updated_by: "ops-1".into(),
            updated_at: Utc::now(),
        };
        let view = ipassan_view(&row).unwrap().unwrap();
        assert!(view.client_secret_set);
        let shown = serde_json::to_string(&view).unwrap();
        assert!(
            !shown.contains("very-secret") && !shown.contains("cxs1"),
            "{shown}"
        );
        assert!(open_all(&row, Some(&sealer)).unwrap().is_none());
        assert!(open_all(&row, None).is_err());
    }
}
