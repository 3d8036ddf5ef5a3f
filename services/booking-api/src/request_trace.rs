//! Each request's trace: the caller's W3C `traceparent` (or a new trace) is carried through the
//! request's span and log lines, into the events it stores, and back in the answer, so one
//! request can be followed through every service.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

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
