//! Strict reading of `application/x-www-form-urlencoded` bodies: the contract names the fields of
//! each write, so a missing, repeated or unknown field is a 400, not something to guess around.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, header};

use crate::error::ApiError;

/// The fields of a form body, each present once.
#[derive(Debug)]
pub struct Form(BTreeMap<String, String>);

impl Form {
    /// Reads a body that must hold exactly `required` plus any of `optional`.
    pub fn parse(
        headers: &HeaderMap,
        body: &[u8],
        required: &[&str],
        optional: &[&str],
    ) -> Result<Form, ApiError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
        {
            return Err(ApiError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError::invalid_request(format!("unreadable form body: {e}")))?;
        let mut fields = BTreeMap::new();
        for (name, value) in pairs {
            if !required.contains(&name.as_str()) && !optional.contains(&name.as_str()) {
                return Err(ApiError::invalid_request(format!(
                    "unexpected field `{name}`"
                )));
            }
            if fields.insert(name.clone(), value).is_some() {
                return Err(ApiError::invalid_request(format!(
                    "field `{name}` is given twice"
                )));
            }
        }
        if let Some(missing) = required.iter().find(|name| !fields.contains_key(**name)) {
            return Err(ApiError::invalid_request(format!(
                "missing field `{missing}`"
            )));
        }
        Ok(Form(fields))
    }

    /// A field's value (empty when an optional field is absent).
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or_default()
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}
