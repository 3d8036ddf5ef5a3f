//! Who is calling: the connecX backend's JWT (HS256) and the scope it gives.
//!
//! Claims: `sub` (user id), `role` (`resident` | `manager` | `operator`), `building_id` (residents
//! and managers), `apartment_id` (residents), `exp`. A missing, malformed, wrongly signed or
//! expired token is a 401. A valid token names either a [`Caller`] acting in one building —
//! residents act on their own bookings, managers within their building — or an [`Operator`]
//! (connecX platform staff, no building claim), who connects buildings to their access-control
//! systems and does nothing else. Each extractor answers 403 to the other kind.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use contracts::Role;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::ids::{ApartmentId, BuildingId, ResidentId};
use crate::problem::Problem;

/// The claims of a connecX token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenClaims {
    pub sub: String,
    pub role: Role,
    /// Residents' and managers' building; operator tokens carry none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub building_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apartment_id: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Checks tokens signed with the shared HS256 secret.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    pub fn hs256(secret: &str, leeway_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_secs;
        validation.validate_exp = true;
        // A token not valid yet (`nbf` in the future, beyond the leeway) is refused.
        validation.validate_nbf = true;
        // Checked only when configured ([`Authenticator::expecting`]).
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Also requires the token's `iss` to be `issuer` and its `aud` to name `audience`, each
    /// when given (`CONNECX__AUTH__ISSUER`, `CONNECX__AUTH__AUDIENCE`).
    pub fn expecting(mut self, issuer: Option<&str>, audience: Option<&str>) -> Self {
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = issuer {
            self.validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if let Some(audience) = audience {
            self.validation.set_audience(&[audience]);
            self.validation.validate_aud = true;
            required.push("aud");
        }
        self.validation.set_required_spec_claims(&required);
        self
    }

    /// Who a bearer token names, or the 401 to answer.
    pub fn verify(&self, token: &str) -> Result<Principal, Problem> {
        let claims = jsonwebtoken::decode::<TokenClaims>(token, &self.key, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => {
                    Problem::unauthorized("token_expired", "the token has expired")
                }
                _ => Problem::unauthorized("invalid_token", "the token is not valid"),
            })?
            .claims;
        if claims.role == Role::Operator {
            return Operator::from_claims(claims).map(Principal::Operator);
        }
        Caller::from_claims(claims).map(Principal::Caller)
    }
}

/// Whoever a valid token names.
#[derive(Debug, Clone)]
pub enum Principal {
    Caller(Caller),
    Operator(Operator),
}

/// What a resident or a manager does in their building.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildingRole {
    Resident,
    Manager,
}

impl From<BuildingRole> for Role {
    fn from(role: BuildingRole) -> Self {
        match role {
            BuildingRole::Resident => Role::Resident,
            BuildingRole::Manager => Role::Manager,
        }
    }
}

/// Mints a token (the demo seed and tests; production tokens come from the connecX backend).
pub fn mint_token(
    secret: &str,
    claims: &TokenClaims,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// An authenticated resident or manager.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub role: BuildingRole,
    pub building_id: BuildingId,
    /// Set for residents.
    pub apartment_id: Option<ApartmentId>,
}

impl Caller {
    fn from_claims(claims: TokenClaims) -> Result<Self, Problem> {
        let invalid = |what: &str| {
            Problem::unauthorized("invalid_token", format!("the token's {what} is not valid"))
        };
        let building_id =
            BuildingId::parse(claims.building_id).map_err(|_| invalid("building_id"))?;
        if claims.sub.is_empty() || claims.sub.len() > 255 {
            return Err(invalid("sub"));
        }
        let role = match claims.role {
            Role::Resident => BuildingRole::Resident,
            Role::Manager => BuildingRole::Manager,
            Role::Operator => return Err(invalid("role")),
        };
        let apartment_id = match (role, claims.apartment_id) {
            (BuildingRole::Resident, Some(apartment)) => {
                Some(ApartmentId::parse(apartment).map_err(|_| invalid("apartment_id"))?)
            }
            (BuildingRole::Resident, None) => return Err(invalid("apartment_id")),
            (BuildingRole::Manager, _) => None,
        };
        if role == BuildingRole::Resident {
            ResidentId::parse(claims.sub.clone()).map_err(|_| invalid("sub"))?;
        }
        Ok(Self {
            user_id: claims.sub,
            role,
            building_id,
            apartment_id,
        })
    }

    pub fn is_manager(&self) -> bool {
        self.role == BuildingRole::Manager
    }

    /// 403 unless the caller is a manager.
    pub fn require_manager(&self) -> Result<(), Problem> {
        if self.is_manager() {
            Ok(())
        } else {
            Err(Problem::forbidden(
                "managers_only",
                "only the building's managers may do this",
            ))
        }
    }

    /// The resident the caller is, when a resident.
    pub fn resident_id(&self) -> Option<ResidentId> {
        match self.role {
            BuildingRole::Resident => ResidentId::parse(self.user_id.clone()).ok(),
            BuildingRole::Manager => None,
        }
    }
}

/// An authenticated operator: connecX platform staff.
#[derive(Debug, Clone)]
pub struct Operator {
    pub user_id: String,
}

impl Operator {
    fn from_claims(claims: TokenClaims) -> Result<Self, Problem> {
        if claims.sub.is_empty() || claims.sub.len() > 255 {
            return Err(Problem::unauthorized(
                "invalid_token",
                "the token's sub is not valid",
            ));
        }
        Ok(Self {
            user_id: claims.sub,
        })
    }
}

/// The bearer token of a request, verified.
fn principal<S>(parts: &Parts, state: &S) -> Result<Principal, Problem>
where
    Arc<Authenticator>: FromRef<S>,
{
    let authenticator = Arc::<Authenticator>::from_ref(state);
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(Problem::unauthorized(
            "missing_token",
            "send `Authorization: Bearer <token>`",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Problem::unauthorized(
                "invalid_token",
                "the Authorization header must be `Bearer <token>`",
            )
        })?;
    authenticator.verify(token)
}

impl Principal {
    /// The resident or manager, or 403 for an operator.
    fn into_caller(self) -> Result<Caller, Problem> {
        match self {
            Principal::Caller(caller) => Ok(caller),
            Principal::Operator(_) => Err(Problem::forbidden(
                "not_for_operators",
                "operators connect buildings to their systems; bookings and building records \
                 belong to residents and managers",
            )),
        }
    }

    /// The operator, or 403 for a resident or manager.
    fn into_operator(self) -> Result<Operator, Problem> {
        match self {
            Principal::Operator(operator) => Ok(operator),
            Principal::Caller(_) => Err(Problem::forbidden(
                "operator_only",
                "only connecX operators may see or change a building's connections",
            )),
        }
    }
}

/// Makes `$who` an extractor: the request's verified token, as `$who` ([`Principal`]'s `$into`).
macro_rules! from_token {
    ($who:ty, $into:ident) => {
        impl<S> FromRequestParts<S> for $who
        where
            S: Send + Sync,
            Arc<Authenticator>: FromRef<S>,
        {
            type Rejection = Problem;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
                principal(parts, state)?.$into()
            }
        }
    };
}

from_token!(Caller, into_caller);
from_token!(Operator, into_operator);

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

    /// What verifying `token` with the test secret (and no leeway) refuses.
    fn refusal(token: &str) -> (u16, String) {
        let problem = Authenticator::hs256(SECRET, 0).verify(token).unwrap_err();
        (problem.status, problem.code.clone())
    }

    /// A token of raw `claims`, for claims a [`TokenClaims`] cannot hold.
    fn raw_token(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn claims(role: Role, exp_offset: i64) -> TokenClaims {
        TokenClaims {
            sub: "r-1".into(),
            role,
            building_id: "b-1".into(),
            apartment_id: Some("a-1".into()),
            exp: (chrono::Utc::now().timestamp() + exp_offset) as u64,
        }
    }

    #[test]
    fn a_valid_token_names_the_caller() {
        let token = mint_token(SECRET, &claims(Role::Resident, 60)).unwrap();
        let Principal::Caller(caller) = Authenticator::hs256(SECRET, 0).verify(&token).unwrap()
        else {
            panic!("a resident token names a caller")
        };
        assert_eq!(caller.user_id, "r-1");
        assert_eq!(caller.building_id.as_str(), "b-1");
        assert_eq!(caller.resident_id().unwrap().as_str(), "r-1");
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = mint_token(
            "another-secret-another-secret-another",
            &claims(Role::Manager, 60),
        )
        .unwrap();
        assert_eq!(refusal(&token), (401, "invalid_token".into()));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let token = mint_token(SECRET, &claims(Role::Manager, -120)).unwrap();
        assert_eq!(refusal(&token), (401, "token_expired".into()));
    }

    #[test]
    fn a_resident_token_without_an_apartment_or_with_a_bad_building_is_refused() {
        let mut c = claims(Role::Resident, 60);
        c.apartment_id = None;
        assert_eq!(refusal(&mint_token(SECRET, &c).unwrap()).0, 401);
        let mut c = claims(Role::Manager, 60);
        c.building_id = "b/1".into();
        assert_eq!(refusal(&mint_token(SECRET, &c).unwrap()).0, 401);
    }

    #[test]
    fn an_operator_token_needs_no_building_and_names_an_operator() {
        let token = raw_token(
            &serde_json::json!({"sub": "ops-1", "role": "operator", "exp": chrono::Utc::now().timestamp() + 60}),
        );
        let Principal::Operator(operator) = Authenticator::hs256(SECRET, 0).verify(&token).unwrap()
        else {
            panic!("an operator token names an operator")
        };
        assert_eq!(operator.user_id, "ops-1");
    }

    #[test]
    fn an_unknown_role_is_refused() {
        let token = raw_token(
            &serde_json::json!({"sub": "x", "role": "admin", "building_id": "b-1", "exp": chrono::Utc::now().timestamp() + 60}),
        );
        assert_eq!(refusal(&token).0, 401);
    }

    /// A token with extra registered claims (`nbf`, `iss`, `aud`) over the usual ones.
    fn token_with(extra: serde_json::Value) -> String {
        let mut claims = serde_json::to_value(claims(Role::Resident, 600)).unwrap();
        for (key, value) in extra.as_object().unwrap() {
            claims[key] = value.clone();
        }
        raw_token(&claims)
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let later = chrono::Utc::now().timestamp() + 300;
        let problem = Authenticator::hs256(SECRET, 30)
            .verify(&token_with(serde_json::json!({"nbf": later})))
            .unwrap_err();
        assert_eq!(
            (problem.status, problem.code.as_str()),
            (401, "invalid_token")
        );
        let now = chrono::Utc::now().timestamp();
        assert!(
            Authenticator::hs256(SECRET, 30)
                .verify(&token_with(serde_json::json!({"nbf": now})))
                .is_ok()
        );
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let expecting = || {
            Authenticator::hs256(SECRET, 0)
                .expecting(Some("https://connecx.example"), Some("access-api"))
        };
        let right =
            token_with(serde_json::json!({"iss": "https://connecx.example", "aud": "access-api"}));
        assert!(expecting().verify(&right).is_ok());
        for wrong in [
            serde_json::json!({"iss": "https://elsewhere.example", "aud": "access-api"}),
            serde_json::json!({"iss": "https://connecx.example", "aud": "another-api"}),
            serde_json::json!({"aud": "access-api"}),
            serde_json::json!({"iss": "https://connecx.example"}),
        ] {
            let problem = expecting().verify(&token_with(wrong.clone())).unwrap_err();
            assert_eq!(problem.code, "invalid_token", "{wrong}");
        }
        // Not configured: neither is required, and an audience is not held against the token.
        assert!(Authenticator::hs256(SECRET, 0).verify(&right).is_ok());
        assert!(
            Authenticator::hs256(SECRET, 0)
                .verify(&token_with(serde_json::json!({})))
                .is_ok()
        );
    }
}
