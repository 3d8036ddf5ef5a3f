//! The contract's JSON shapes, exactly as iPassan sends them. They never leave the client module:
//! the rest of the service sees [`super::Person`] and [`super::VisitorRecord`].

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    pub expires_in: u64,
}

#[derive(Debug, Deserialize)]
pub struct ErrorAnswer {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub access_profile_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Visitor {
    pub id: String,
    pub visitee_id: String,
    pub valid_from: String,
    pub valid_to: String,
    #[serde(default)]
    pub access_profile_id: Option<String>,
    pub external_ref: String,
    pub credential: Option<Credential>,
}

#[derive(Debug, Deserialize)]
pub struct Credential {
    #[serde(rename = "type")]
    pub kind: String,
    pub pin: String,
}
