//! HTTP through the host's `http` import (which reaches only the connector's
//! `allow_hosts`), with the contract's mapping of answers onto errors.

use base64::Engine as _;
use serde_json::Value;

use crate::bindings::steward::connector::host::{self, Header, HttpRequest};
use crate::error::{Error, status_error};

/// A client: the connector's `User-Agent` and the headers every request carries
/// (authorization, `Accept`, …).
#[derive(Debug, Clone)]
pub struct Http {
    headers: Vec<(String, String)>,
}

impl Http {
    /// A client whose requests carry `User-Agent: steward-connector-NAME/VERSION`.
    pub fn new(name: &str, version: &str) -> Self {
        Http {
            headers: vec![(
                "User-Agent".to_owned(),
                format!("steward-connector-{name}/{version}"),
            )],
        }
    }

    /// The client of connector `C`.
    pub fn for_connector<C: crate::Connector>() -> Self {
        Http::new(C::NAME, C::VERSION)
    }

    /// Adds a header to every request.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds `Authorization: Basic base64(user:password)` to every request.
    #[must_use]
    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.header("Authorization", &format!("Basic {token}"))
    }

    /// A request to build and send.
    pub fn request(&self, method: &str, url: &str) -> Request {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: self.headers.clone(),
            body: None,
        }
    }

    /// `GET url`; the answer's JSON.
    pub fn get_json(&self, url: &str) -> Result<Value, Error> {
        self.request("GET", url).send()?.json()
    }

    /// `POST url` with a JSON body; the answer's JSON (`null` when empty).
    pub fn post_json(&self, url: &str, body: &Value) -> Result<Value, Error> {
        self.request("POST", url).json(body).send()?.json()
    }

    /// `PUT url` with a JSON body; the answer's JSON (`null` when empty).
    pub fn put_json(&self, url: &str, body: &Value) -> Result<Value, Error> {
        self.request("PUT", url).json(body).send()?.json()
    }

    /// `PATCH url` with a JSON body; the answer's JSON (`null` when empty).
    pub fn patch_json(&self, url: &str, body: &Value) -> Result<Value, Error> {
        self.request("PATCH", url).json(body).send()?.json()
    }
}

/// One request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Request {
    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets a JSON body (compact) and `Content-Type: application/json`.
    #[must_use]
    pub fn json(self, body: &Value) -> Self {
        self.body(body.to_string().into_bytes(), "application/json")
    }

    /// Sets a body and its content type.
    #[must_use]
    pub fn body(mut self, bytes: Vec<u8>, content_type: &str) -> Self {
        self.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        self.headers
            .push(("Content-Type".to_owned(), content_type.to_owned()));
        self.body = Some(bytes);
        self
    }

    /// Sends it; a non-2xx answer is an error per the contract (429, 5xx: retryable
    /// with `Retry-After`; other statuses: permanent, with the vendor's message).
    pub fn send(self) -> Result<Response, Error> {
        let response = self.send_unchecked()?;
        match status_error(
            response.status,
            response.header("retry-after"),
            &response.body,
        ) {
            Some(e) => Err(e),
            None => Ok(response),
        }
    }

    /// Sends it and returns whatever status came back; only a failure to get an
    /// answer (refused, timed out, not allowed) is an error, a retryable one.
    pub fn send_unchecked(self) -> Result<Response, Error> {
        let method = self.method.clone();
        let request = HttpRequest {
            method: self.method,
            url: self.url,
            headers: self
                .headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
            body: self.body,
        };
        match host::http(&request) {
            Ok(r) => {
                crate::log::debug(&format!("{method} request: HTTP {}", r.status));
                Ok(Response {
                    status: r.status,
                    headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                    body: r.body,
                })
            }
            Err(e) => Err(Error::retryable(format!("HTTP request failed: {e}"))),
        }
    }
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Its status.
    pub status: u16,
    /// Its headers, as received.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; `null` when empty. A body that is not JSON is a permanent
    /// error (the vendor answered something else than its API).
    pub fn json(&self) -> Result<Value, Error> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::permanent(format!(
                "HTTP {}: the answer is not JSON ({e})",
                self.status
            ))
        })
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
