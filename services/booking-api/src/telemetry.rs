//! HTTP request metrics for `/metrics` and request tracing. The process-wide recorder lives in
//! `platform::metrics`, shared with the workers when they run in one process (tests).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub use platform::metrics::{prometheus, upkeep};

/// Counts requests and measures their latency per route template (never the raw path, whose ids
/// would make one series per booking).
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Gives each request its trace (the caller's W3C `traceparent`, or a new one): the request's
/// span and every log line under it carry `trace_id`, the events it stores carry it on through
/// the outbox (`platform::trace`), and the response names it in `traceparent`.
pub async fn trace_requests(mut request: Request, next: Next) -> Response {
    let trace = request
        .headers()
        .get(platform::trace::TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(platform::trace::TraceId::from_traceparent)
        .unwrap_or_default();
    request.extensions_mut().insert(trace);
    let mut response = platform::trace::in_trace(trace, next.run(request)).await;
    if let Ok(value) = HeaderValue::from_str(&trace.to_traceparent()) {
        response
            .headers_mut()
            .insert(platform::trace::TRACEPARENT, value);
    }
    response
}

/// The span of one request: method, path and the request's trace id.
pub fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let trace_id = request
        .extensions()
        .get::<platform::trace::TraceId>()
        .map(ToString::to_string)
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        trace_id = %trace_id,
    )
}
