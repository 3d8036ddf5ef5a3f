//! Slow clients cannot hold connections: headers that do not all arrive in time close the
//! connection, and a request (its body included) that takes too long answers 408.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::spawn_app_offline_with;

async fn connect(address: &str) -> TcpStream {
    let host = address.trim_start_matches("http://");
    TcpStream::connect(host)
        .await
        .expect("connect to booking-api")
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = spawn_app_offline_with(|settings| settings.http.header_read_timeout_secs = 1).await;
    let mut slow = connect(&app.address).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: booking-api\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was still open after 10 s");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.contains("200 OK"),
        "an unfinished request was answered: {answer}"
    );

    // A client that sends its headers in time is served as always.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_request_whose_body_never_completes_answers_408_in_time() {
    let app = spawn_app_offline_with(|settings| settings.http.request_timeout_secs = 1).await;
    app.seed().await;
    let token = app.resident_ana();
    let mut slow = connect(&app.address).await;
    let head = format!(
        "POST /v1/visitor-bookings HTTP/1.1\r\nHost: booking-api\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"visitor\":"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut answer))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(app.outbox_rows().await, 0, "nothing stored");
}
