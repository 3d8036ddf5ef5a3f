//! connecX's own identifiers for buildings, apartments, facilities and residents (docs/architecture.md, "Services and what each owns").
//!
//! They are strings the connecX backend chooses, limited to `[A-Za-z0-9_-]{1,64}` so they are safe
//! in URLs, logs and the downstream systems' fields. Each kind has its own newtype so that a
//! facility id can never be passed where an apartment id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest identifier accepted.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_LEN} characters")]
    TooLong,
    #[error("may contain only letters, digits, `_` and `-`")]
    BadCharacter,
}

/// Checks the identifier rule `[A-Za-z0-9_-]{1,64}`.
pub fn check_id(candidate: &str) -> Result<(), InvalidId> {
    if candidate.is_empty() {
        return Err(InvalidId::Empty);
    }
    if candidate.len() > MAX_ID_LEN {
        return Err(InvalidId::TooLong);
    }
    if !candidate
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(InvalidId::BadCharacter);
    }
    Ok(())
}

macro_rules! connecx_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(try_from = "String", into = "String")]
        #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
        pub struct $name(String);

        impl $name {
            pub fn parse(candidate: impl Into<String>) -> Result<Self, InvalidId> {
                let candidate = candidate.into();
                check_id(&candidate)?;
                Ok(Self(candidate))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

connecx_id!(
    /// A building, as connecX names it.
    BuildingId
);
connecx_id!(
    /// An apartment within a building.
    ApartmentId
);
connecx_id!(
    /// A bookable facility (games room, gym …) within a building.
    FacilityId
);
connecx_id!(
    /// A resident; the same string as the `sub` of the resident's token.
    ResidentId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_digits_underscore_and_dash_are_accepted_up_to_64() {
        assert!(check_id("a").is_ok());
        assert!(check_id("Apt_501-B").is_ok());
        assert!(check_id(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        assert_eq!(check_id(""), Err(InvalidId::Empty));
        assert_eq!(check_id(&"x".repeat(65)), Err(InvalidId::TooLong));
        for bad in ["a b", "a/b", "a.b", "ä", "a%20", "../x", "a\n"] {
            assert_eq!(check_id(bad), Err(InvalidId::BadCharacter), "{bad:?}");
        }
    }

    #[test]
    fn ids_deserialize_only_when_valid() {
        assert!(serde_json::from_str::<FacilityId>("\"gym-1\"").is_ok());
        let err = serde_json::from_str::<FacilityId>("\"gym 1\"").unwrap_err();
        assert!(err.to_string().contains("letters"), "{err}");
    }
}
