//! A small HTTP client of the control API, for tests and tools that drive a simulator (in-process
//! or the local run's). It speaks only `/_sim`; the iPassan API itself is for the real client.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::control::StateView;
use crate::model::{DoorCheck, Fault, LoggedRequest, Seed};

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("ipassan-sim control call {path} failed: {source}")]
    Http {
        path: String,
        source: reqwest::Error,
    },
    #[error("ipassan-sim control call {path} answered {status}: {body}")]
    Refused {
        path: String,
        status: u16,
        body: String,
    },
}

/// Drives one simulator through `/_sim`.
#[derive(Debug, Clone)]
pub struct SimControl {
    base_url: String,
    http: reqwest::Client,
}

impl SimControl {
    pub fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Option<T>, ControlError> {
        let http = |source| ControlError::Http {
            path: path.to_owned(),
            source,
        };
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(http)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ControlError::Refused {
                path: path.to_owned(),
                status: status.as_u16(),
                body: response.text().await.unwrap_or_default(),
            });
        }
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        response.json().await.map(Some).map_err(http)
    }

    async fn post(&self, path: &str, body: Value) -> Result<(), ControlError> {
        self.call::<Value>(reqwest::Method::POST, path, Some(body))
            .await
            .map(|_| ())
    }

    pub async fn reset(&self) -> Result<(), ControlError> {
        self.post("/_sim/reset", json!({})).await
    }

    pub async fn seed(&self, seed: &Seed) -> Result<(), ControlError> {
        self.post("/_sim/seed", serde_json::to_value(seed).unwrap_or_default())
            .await
    }

    pub async fn state(&self) -> Result<StateView, ControlError> {
        self.call(reqwest::Method::GET, "/_sim/state", None)
            .await
            .map(|s| {
                s.unwrap_or_else(|| StateView {
                    sites: Default::default(),
                    credentials: Vec::new(),
                })
            })
    }

    pub async fn requests(&self) -> Result<Vec<LoggedRequest>, ControlError> {
        self.call(reqwest::Method::GET, "/_sim/requests", None)
            .await
            .map(Option::unwrap_or_default)
    }

    /// Sets the clock: RFC 3339 (an instant) or `YYYY-MM-DDTHH:MM:SS` (site-local).
    pub async fn set_clock(&self, now: &str) -> Result<(), ControlError> {
        self.post("/_sim/clock", json!({"now": now})).await
    }

    pub async fn real_clock(&self) -> Result<(), ControlError> {
        self.post("/_sim/clock", json!({"real": true})).await
    }

    /// Tries `pin` at `door` of `site` at the simulator's clock.
    pub async fn try_door(
        &self,
        site: &str,
        door: &str,
        pin: &str,
    ) -> Result<DoorCheck, ControlError> {
        let path = format!("/_sim/doors/{door}/pin");
        self.call(
            reqwest::Method::POST,
            &path,
            Some(json!({"site": site, "pin": pin})),
        )
        .await
        .map(|c| {
            c.unwrap_or(DoorCheck {
                opens: false,
                reason: "no answer".into(),
            })
        })
    }

    pub async fn add_fault(&self, fault: &Fault) -> Result<(), ControlError> {
        self.post(
            "/_sim/faults",
            serde_json::to_value(fault).unwrap_or_default(),
        )
        .await
    }

    pub async fn clear_faults(&self) -> Result<(), ControlError> {
        self.call::<Value>(reqwest::Method::DELETE, "/_sim/faults", None)
            .await
            .map(|_| ())
    }

    /// Tokens issued from now on live `seconds`.
    pub async fn set_token_lifetime(&self, seconds: u64) -> Result<(), ControlError> {
        self.post("/_sim/tokens/lifetime", json!({"seconds": seconds}))
            .await
    }

    /// Every token issued so far expires now.
    pub async fn expire_tokens(&self) -> Result<(), ControlError> {
        self.post("/_sim/tokens/expire", json!({})).await
    }
}
