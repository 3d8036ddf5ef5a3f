//! What stands in front of the API: every request is logged (`GET /_sim/requests`) and may be
//! answered by an injected fault (`POST /_sim/faults`) — a status, a `Retry-After`, a delay —
//! instead of by the API itself. The control API is neither logged nor faulted.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use crate::SimState;
use crate::error::{error_code, json};
use crate::model::{FaultResponse, LoggedRequest};

/// Bodies above this are refused (the API's forms are tiny).
const MAX_BODY: usize = 64 * 1024;

pub async fn log_and_fault(
    State(state): State<SimState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let logged_body = if path == "/api/v1/token" {
        // The token request carries the client secret.
        Some("(not kept)".to_owned())
    } else {
        (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
    };
    let fault = state.world().take_fault(&method, &path);
    let (response, faulted) = match fault {
        Some(fault) => {
            if let Some(delay) = fault.delay_ms {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            match fault.status {
                Some(_) => (fault_response(&fault), true),
                None => {
                    let request = Request::from_parts(parts, Body::from(bytes));
                    (next.run(request).await, true)
                }
            }
        }
        None => {
            let request = Request::from_parts(parts, Body::from(bytes));
            (next.run(request).await, false)
        }
    };
    state.world().requests.push(LoggedRequest {
        at: Utc::now(),
        method,
        path,
        query,
        body: logged_body,
        status: response.status().as_u16(),
        fault: faulted,
    });
    response
}

fn fault_response(fault: &FaultResponse) -> Response {
    let status = fault
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = fault.body.clone().unwrap_or_else(
        || serde_json::json!({"error": error_code(status), "message": "injected by ipassan-sim"}),
    );
    let mut response = if status == StatusCode::NO_CONTENT {
        status.into_response()
    } else if let Some(raw) = &fault.raw_body {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            raw.repeat(fault.repeat.unwrap_or(1)),
        )
            .into_response()
    } else {
        json(status, &body)
    };
    if let Some(seconds) = fault.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
