//! The metrics and health listener, on hyper's HTTP/1.1 server.
//!
//! It answers `GET` (and `HEAD`) of two paths:
//! - `/metrics`: every metric in the Prometheus text format;
//! - `/healthz`: `200 ok` while the gateway accepts mail, `503` once
//!   shutdown has begun, so a load balancer stops sending new clients while
//!   sessions in flight drain;
//!
//! and, when the program hands it an [`Api`], passes `/quarantine` and
//! everything under it to that (the quarantine API, built above this
//! layer).
//!
//! One request per connection (`Connection: close`), a request head of at
//! most [`MAX_REQUEST`] bytes read within [`REQUEST_TIMEOUT`], and at most
//! [`MAX_CONCURRENT`] connections at once: a scraper or a stray client
//! cannot make it hold more than a few kilobytes.

use super::Metrics;
use crate::shutdown::ShutdownSignal;
use async_std::net::{TcpListener, TcpStream};
use async_std::task;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::io::AsyncReadExt;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use log::{debug, info, warn};
use smol_hyper::rt::{FuturesIo, SmolTimer};
use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Longest request head accepted (request line and headers); hyper's
/// smallest buffer limit.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection may last: an API release waits for the upstream.
const CONNECTION_LIMIT: Duration = Duration::from_secs(300);
/// How long a closing connection waits for the client's leftover input.
const LINGER: Duration = Duration::from_secs(1);
/// Connections served at once; more are closed at once.
pub const MAX_CONCURRENT: usize = 32;

/// A request for the API: what it needs of the HTTP request.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// `GET`, `POST`, `DELETE`, ...
    pub method: String,
    /// The path, percent-encoding left as sent (`/quarantine/ID`).
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    /// The `Authorization` header's value, if it was sent.
    pub authorization: Option<String>,
}

/// The API's answer: a status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The body, JSON.
    pub body: String,
}

/// An API served under `/quarantine` on this listener.
pub trait Api: Send + Sync {
    /// Answers one request.
    fn handle(&self, request: ApiRequest) -> BoxFuture<'_, ApiResponse>;
}

/// What the listener reports on and passes on.
struct Source {
    /// Rendered by `/metrics`.
    metrics: Arc<Metrics>,
    /// Fired once shutdown began: `/healthz` turns 503.
    shutdown: ShutdownSignal,
    /// The quarantine API, when it is on.
    api: Option<Arc<dyn Api>>,
}

/// Serves `metrics`, a health check that turns 503 once `shutdown` fires,
/// and `api` when given, on `listener`, until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: ShutdownSignal,
    api: Option<Arc<dyn Api>>,
) {
    let with_api = api.is_some();
    let shared = Arc::new(Source {
        metrics,
        shutdown,
        api,
    });
    if let Ok(addr) = listener.local_addr() {
        info!("metrics on http://{addr}/metrics, health check on http://{addr}/healthz");
        if with_api {
            info!("quarantine API on http://{addr}/quarantine");
        }
    }
    let busy = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                warn!("metrics listener: accept failed: {e}");
                task::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONCURRENT {
            busy.fetch_sub(1, Ordering::SeqCst);
            debug!("metrics listener: too many connections; closing one from {peer}");
            continue;
        }
        let shared = shared.clone();
        let busy = busy.clone();
        task::spawn(async move {
            if let Err(e) = answer(stream, shared).await {
                debug!("metrics listener: {peer}: {e}");
            }
            busy.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Serves one connection (one request), then closes it gently.
async fn answer(stream: TcpStream, shared: Arc<Source>) -> io::Result<()> {
    let mut rest = stream.clone();
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(req, &shared).await) }
    });
    let conn = http1::Builder::new()
        .timer(SmolTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_buf_size(MAX_REQUEST)
        .keep_alive(false)
        .title_case_headers(true)
        .serve_connection(FuturesIo::new(stream), service);
    let served = async_std::future::timeout(CONNECTION_LIMIT, conn).await;
    let _ = rest.shutdown(std::net::Shutdown::Write);
    // Closing with unread input would reset the connection, and the client
    // might lose the response: read what it still sends (a little, briefly).
    let _ = async_std::future::timeout(LINGER, async {
        let mut sink = [0u8; 1024];
        let mut left = MAX_REQUEST * 8;
        while left > 0 {
            match rest.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(io::Error::other(e)),
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// The response to one request.
async fn route<B>(req: Request<B>, shared: &Source) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let Some(api) = &shared.api {
        if path == "/quarantine" || path.starts_with("/quarantine/") {
            let request = ApiRequest {
                method: req.method().as_str().to_string(),
                path: path.to_string(),
                query: req.uri().query().map(str::to_string),
                authorization: req
                    .headers()
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            };
            let answer = api.handle(request).await;
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
            let mut r = response(status, "application/json", answer.body);
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                );
            }
            return r;
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    // hyper leaves out the body of a HEAD response itself.
    match path {
        "/metrics" => response(StatusCode::OK, super::CONTENT_TYPE, shared.metrics.render()),
        "/healthz" if shared.shutdown.is_fired() => response(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n".into(),
        ),
        "/healthz" => response(StatusCode::OK, "text/plain", "ok\n".into()),
        _ => response(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// A complete response that is not to be cached.
fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
