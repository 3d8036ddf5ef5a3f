//! A building's own connections to its access-control systems, as they travel between services
//! (docs/architecture.md, "Many buildings").
//!
//! An operator connects a building to its own iPassan tenant or Salto SHIP endpoint in
//! booking-api. Each change is one `ipassan_connection.changed.v1` / `salto_connection.changed.v1`
//! event whose envelope `version` counts that building's changes of that system (the envelope's
//! `booking_id` is the connection's subject id, [`connection_subject`]). The worker that uses the
//! system stores the latest version in its own schema; every booking snapshot says which version
//! it was made under ([`ConnectionVersions`]), so a worker that has not yet seen that version
//! waits for it instead of using an older one.
//!
//! Secrets travel sealed ([`SealedSecret`]); only services holding `CONNECX__SECRETS__KEY` can
//! open them, and no type here prints one.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The outside systems a building is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessSystem {
    Ipassan,
    Salto,
}

impl AccessSystem {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessSystem::Ipassan => "ipassan",
            AccessSystem::Salto => "salto",
        }
    }
}

impl fmt::Display for AccessSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Namespace of connection subject ids (a fixed random UUID).
const CONNECTION_NAMESPACE: Uuid = Uuid::from_u128(0x9d2b_61f4_0c3e_4a7b_b5e8_17a4_c0f9_3e26);

/// The id a building's connection to `system` goes by in envelopes (in `booking_id`): stable, so
/// the version rule orders that connection's changes like a booking's.
pub fn connection_subject(building_id: &str, system: AccessSystem) -> Uuid {
    Uuid::new_v5(
        &CONNECTION_NAMESPACE,
        format!("building/{building_id}/connection/{system}").as_bytes(),
    )
}

/// The version of the building's own connection each system was at when a snapshot was made:
/// 0 = the building never had one of its own (the deployment default). A worker holding an
/// older version than the snapshot names waits for the newer one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionVersions {
    #[serde(default)]
    pub ipassan: i64,
    #[serde(default)]
    pub salto: i64,
}

/// A secret sealed with `CONNECX__SECRETS__KEY` (AEAD; `platform::secrets` seals and opens it).
/// Its text is `cxs1.<key id>.<base64 nonce + ciphertext>`; `Debug` shows only the key id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedSecret(pub String);

impl SealedSecret {
    /// The id of the key it was sealed under, if the text has the sealed form.
    pub fn key_id(&self) -> Option<&str> {
        let mut parts = self.0.splitn(3, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("cxs1"), Some(id), Some(_)) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedSecret(key {})", self.key_id().unwrap_or("?"))
    }
}

/// Why a connection check failed (`POST /v1/buildings/{id}/connections/{system}/check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionProblem {
    /// Nothing answers at the URL (refused, DNS, TLS), or the server says it is unavailable.
    Unreachable,
    /// It did not answer within the connection's timeout.
    Timeout,
    /// It answered, and refused connecX's credentials.
    CredentialsRefused,
    /// The credentials work, but not for the building's site (iPassan).
    SiteNotFound,
    /// It answered something that is not the protocol connecX speaks.
    ProtocolError,
}

impl ConnectionProblem {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionProblem::Unreachable => "unreachable",
            ConnectionProblem::Timeout => "timeout",
            ConnectionProblem::CredentialsRefused => "credentials_refused",
            ConnectionProblem::SiteNotFound => "site_not_found",
            ConnectionProblem::ProtocolError => "protocol_error",
        }
    }
}

/// The field names secrets are sealed for (the AEAD's associated data): a secret sealed for one
/// field does not open as another.
pub mod sealed_fields {
    pub const IPASSAN_CLIENT_SECRET: &str = "ipassan.client_secret";
    pub const SALTO_PASSWORD: &str = "salto.password";
    pub const SALTO_KEY: &str = "salto.key";
}

/// A building's own iPassan tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpassanConnection {
    /// e.g. `https://tenant.ipassan.com`
    pub base_url: String,
    pub client_id: String,
    pub client_secret: SealedSecret,
    /// The building's iPassan site (it wins over the building's `ipassan_site`).
    pub site: String,
}

/// How a SHIP endpoint wants to be authenticated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaltoAuthKind {
    #[default]
    None,
    Basic,
    Key,
}

/// A building's own Salto SHIP endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaltoConnection {
    pub url: String,
    pub auth_kind: SaltoAuthKind,
    pub username: Option<String>,
    pub password: Option<SealedSecret>,
    pub key: Option<SealedSecret>,
    pub timeout_secs: u64,
}

/// Payload of `ipassan_connection.changed.v1`: the building's iPassan connection from this
/// version on; `None` = back to the deployment default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpassanConnectionChange {
    pub building_id: String,
    pub connection: Option<IpassanConnection>,
}

/// Payload of `salto_connection.changed.v1`, as [`IpassanConnectionChange`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaltoConnectionChange {
    pub building_id: String,
    pub connection: Option<SaltoConnection>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_subject_is_stable_and_differs_by_building_and_system() {
        let a = connection_subject("harbour", AccessSystem::Ipassan);
        assert_eq!(a, connection_subject("harbour", AccessSystem::Ipassan));
        assert_ne!(a, connection_subject("harbour", AccessSystem::Salto));
        assert_ne!(a, connection_subject("bay", AccessSystem::Ipassan));
    }

    #[test]
    fn a_sealed_secret_shows_only_its_key_id() {
        let sealed = SealedSecret("cxs1.ab12cd34.c2VjcmV0".into());
        assert_eq!(sealed.key_id(), Some("ab12cd34"));
        assert_eq!(format!("{sealed:?}"), "SealedSecret(key ab12cd34)");
        assert_eq!(SealedSecret("plain".into()).key_id(), None);
    }
}
