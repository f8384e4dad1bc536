//! A small HTTP/1.1 client over a counted socket: hyper's client connection on a
//! [`CountingStream`], kept alive between requests and reopened when the server closes it, like
//! a browser tab polling one origin.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared_model::ErrorBody;

use crate::endpoint::Base;
use crate::error::CliError;
use crate::transport::counting::{Traffic, connect_tcp};

/// What this tool calls itself in `User-Agent`.
pub const USER_AGENT_VALUE: &str = concat!("danmaku-cli/", env!("CARGO_PKG_VERSION"));

/// A response: its status and its whole body.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: StatusCode,
    /// The body, read to its end.
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as `T` when the status is a success, else the server's error body as
    /// [`CliError::Refused`] (or a protocol error when the body is not the documented shape).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, CliError> {
        if self.status.is_success() {
            serde_json::from_slice(&self.body).map_err(|e| {
                CliError::Protocol(format!("unexpected answer ({}): {e}", self.status))
            })
        } else {
            Err(self.error())
        }
    }

    /// The error this (failed) response carries.
    pub fn error(&self) -> CliError {
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(body) => CliError::Refused(body.error),
            Err(_) => CliError::Protocol(format!(
                "HTTP {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )),
        }
    }
}

/// One client connection to one service, reopened on demand; every byte is counted in its
/// [`Traffic`].
pub struct HttpClient {
    authority: String,
    host: HeaderValue,
    traffic: Arc<Traffic>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpClient {
    /// A client for `base`, counting into `traffic`. Connects at the first request.
    pub fn new(base: &Base, traffic: Arc<Traffic>) -> Result<Self, CliError> {
        let host = HeaderValue::from_str(&base.authority)
            .map_err(|_| CliError::Usage(format!("{base}: not a valid host")))?;
        Ok(Self {
            authority: base.authority.clone(),
            host,
            traffic,
            sender: None,
        })
    }

    /// `GET path` (with its query), waiting at most `limit` for the whole answer.
    pub async fn get(&mut self, path: &str, limit: Duration) -> Result<HttpResponse, CliError> {
        self.request(Method::GET, path, None, limit).await
    }

    /// `POST path` with `body` as JSON, waiting at most `limit`.
    pub async fn post_json<T: Serialize>(
        &mut self,
        path: &str,
        body: &T,
        limit: Duration,
    ) -> Result<HttpResponse, CliError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| CliError::Protocol(format!("cannot encode the request: {e}")))?;
        self.request(Method::POST, path, Some(Bytes::from(bytes)), limit)
            .await
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        limit: Duration,
    ) -> Result<HttpResponse, CliError> {
        // A failed or timed-out exchange leaves no connection behind (see `exchange`), so the
        // next request starts on a fresh one.
        let timed_out = || CliError::timeout(format!("{method} {path}"), limit);
        match tokio::time::timeout(limit, self.exchange(&method, path, body.clone())).await {
            Ok(Ok(response)) => Ok(response),
            // A kept-alive connection the server closed while idle fails before the request is
            // read; a GET is safe to send again on a fresh connection. A POST is not retried: the
            // server may have stored it.
            Ok(Err(Failure::Stale(_))) if method == Method::GET => {
                match tokio::time::timeout(limit, self.exchange(&method, path, body)).await {
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(failure)) => Err(failure.into_error(&self.authority)),
                    Err(_) => Err(timed_out()),
                }
            }
            Ok(Err(failure)) => Err(failure.into_error(&self.authority)),
            Err(_) => Err(timed_out()),
        }
    }

    async fn exchange(
        &mut self,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<HttpResponse, Failure> {
        // The connection is taken out while in use and put back once the answer is read, so a
        // failed exchange leaves none behind.
        let (mut sender, mut fresh) = match self.sender.take() {
            Some(sender) if !sender.is_closed() => (sender, false),
            _ => (self.connect().await?, true),
        };
        if sender.ready().await.is_err() {
            // Closed between requests (keep-alive expired): the request was never sent.
            sender = self.connect().await?;
            fresh = true;
        }
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, self.host.clone())
            .header(USER_AGENT, USER_AGENT_VALUE);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| Failure::Fatal(format!("bad request {path}: {e}")))?;
        self.traffic.add_request();
        let response = sender.send_request(request).await.map_err(|e| {
            if fresh {
                Failure::Broken(e.to_string())
            } else {
                Failure::Stale(e.to_string())
            }
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::Broken(format!("reading the answer: {e}")))?
            .to_bytes();
        self.sender = Some(sender);
        Ok(HttpResponse { status, body })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let stream = connect_tcp(&self.authority, &self.traffic)
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Connect(e.to_string()))?;
        // The connection task ends when the server or this client closes the connection.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// Why an exchange failed, so a stale keep-alive connection can be retried.
enum Failure {
    /// No connection could be made.
    Connect(String),
    /// A reused connection failed: likely closed by the server while idle.
    Stale(String),
    /// A fresh connection failed mid-exchange.
    Broken(String),
    /// The request could not be built.
    Fatal(String),
}

impl Failure {
    fn into_error(self, authority: &str) -> CliError {
        match self {
            Self::Connect(reason) => CliError::Connect {
                addr: authority.to_owned(),
                reason,
            },
            Self::Stale(reason) | Self::Broken(reason) => {
                CliError::Protocol(format!("connection to {authority} failed: {reason}"))
            }
            Self::Fatal(reason) => CliError::Protocol(reason),
        }
    }
}
