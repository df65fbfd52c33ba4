//! A real HTTP server on `127.0.0.1:0` (axum on its own thread and runtime) that records
//! every request and hands it to a [`Vendor`], which plays one vendor's API.
//!
//! Every request is recorded (method, path, query, headers, body), then:
//! 1. the vendor checks it ([`Vendor::check`]: the shape the vendor's API demands; a
//!    request that does not pass is answered with the vendor's rejection),
//! 2. an injected fault, if one is queued ([`Server::fail_next`]), answers it instead,
//! 3. otherwise the vendor answers it ([`Vendor::handle`]), after a delay if one is
//!    queued ([`Server::delay_next`]: a slow vendor that still does the work).
//!
//! [`Down`] is a vendor that is down (it holds a port and hangs up at once);
//! [`send`] makes raw requests, to test the servers themselves.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, Uri};
use serde_json::Value;

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path as sent (still percent-encoded).
    pub path: String,
    /// The query string as sent, without `?`.
    pub query: Option<String>,
    /// Headers in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as JSON; panics (test failure) naming the request when it is not.
    pub fn json(&self) -> Value {
        self.body_json().unwrap_or_else(|| {
            panic!(
                "{}: body is not JSON: {:?}",
                self.line(),
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The query's `name=value` pairs, decoded (`+` is a space).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        parse_query(self.query.as_deref().unwrap_or(""))
    }

    /// The first value of a query parameter, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The path split on `/` with each segment percent-decoded (the leading empty
    /// segment dropped).
    pub fn segments(&self) -> Vec<String> {
        self.path
            .split('/')
            .skip(1)
            .map(|s| percent_decode(s, false))
            .collect()
    }

    /// `METHOD /path?query`, for messages.
    pub fn line(&self) -> String {
        match &self.query {
            Some(q) => format!("{} {}?{}", self.method, self.path, q),
            None => format!("{} {}", self.method, self.path),
        }
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`); invalid escapes
/// stay as they are.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&b=x+y` → `[("a","1"), ("b","x y")]`, decoded.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((n, v)) => (percent_decode(n, true), percent_decode(v, true)),
            None => (percent_decode(pair, true), String::new()),
        })
        .collect()
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// How long the server waits before answering (a slow vendor).
    pub delay: Option<std::time::Duration>,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            headers: vec![(
                "content-type".into(),
                "application/json;charset=UTF-8".into(),
            )],
            body: serde_json::to_vec(body).unwrap_or_default(),
            delay: None,
        }
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
            delay: None,
        }
    }

    /// An answer without a body (e.g. 204).
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
        }
    }

    /// The same answer, sent after `ms` milliseconds.
    pub fn delayed(mut self, ms: u64) -> Reply {
        self.delay = Some(std::time::Duration::from_millis(ms));
        self
    }

    /// The same answer with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// One vendor's API, played by a [`Server`]. Calls are serialised (one at a time).
pub trait Vendor: Send + 'static {
    /// Checks the request's shape before anything else (faults included); `Some` is
    /// the vendor's rejection (e.g. 400 with the reason). Default: accepts all.
    fn check(&mut self, _request: &Recorded) -> Option<Reply> {
        None
    }

    /// Answers a request that passed [`Vendor::check`] and was not faulted.
    fn handle(&mut self, request: &Recorded) -> Reply;
}

struct Inner<V> {
    vendor: V,
    requests: Vec<Recorded>,
    /// Requests received in total (not reset by `clear_requests`).
    total: usize,
    faults: VecDeque<Reply>,
    /// Delays for the vendor's next answers (a slow vendor that still does the work).
    delays: VecDeque<std::time::Duration>,
}

type Shared<V> = Arc<Mutex<Inner<V>>>;

fn lock<V>(shared: &Shared<V>) -> MutexGuard<'_, Inner<V>> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running loopback server; stopped when dropped.
pub struct Server<V: Vendor> {
    addr: SocketAddr,
    shared: Shared<V>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl<V: Vendor> Server<V> {
    /// Binds `127.0.0.1:0` and serves `vendor` on a thread of its own.
    pub fn start(vendor: V) -> Server<V> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let shared: Shared<V> = Arc::new(Mutex::new(Inner {
            vendor,
            requests: Vec::new(),
            total: 0,
            faults: VecDeque::new(),
            delays: VecDeque::new(),
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("vendor-{addr}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app = Router::new().fallback(serve::<V>).with_state(state);
                    tokio::select! {
                        result = axum::serve(listener, app) => {
                            if let Err(e) = result {
                                eprintln!("vendor server {addr}: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every open connection.
            })
            .expect("server thread");
        Server {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared).requests.clone()
    }

    /// Requests received in total, including those forgotten by `clear_requests`.
    pub fn total_requests(&self) -> usize {
        lock(&self.shared).total
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        lock(&self.shared).requests.clear();
    }

    /// Runs `f` on the vendor's state (to seed it or to inspect it).
    pub fn with<R>(&self, f: impl FnOnce(&mut V) -> R) -> R {
        f(&mut lock(&self.shared).vendor)
    }

    /// Answers the next `n` requests (that pass the vendor's check) with `reply`
    /// instead of the vendor.
    pub fn fail_next(&self, n: usize, reply: Reply) {
        let mut inner = lock(&self.shared);
        for _ in 0..n {
            inner.faults.push_back(reply.clone());
        }
    }

    /// The vendor handles the next `n` requests (that pass its check and are not
    /// faulted) as usual but answers each only after `ms` milliseconds.
    pub fn delay_next(&self, n: usize, ms: u64) {
        let mut inner = lock(&self.shared);
        for _ in 0..n {
            inner.delays.push_back(std::time::Duration::from_millis(ms));
        }
    }

    /// Faults still queued.
    pub fn faults_left(&self) -> usize {
        lock(&self.shared).faults.len()
    }
}

impl<V: Vendor> Drop for Server<V> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve<V: Vendor>(
    State(shared): State<Shared<V>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let request = Recorded {
        method: method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let reply = {
        let mut inner = lock(&shared);
        inner.requests.push(request.clone());
        inner.total += 1;
        match inner.vendor.check(&request) {
            Some(rejection) => rejection,
            None => match inner.faults.pop_front() {
                Some(fault) => fault,
                None => {
                    let mut reply = inner.vendor.handle(&request);
                    if let Some(delay) = inner.delays.pop_front() {
                        reply.delay = Some(delay);
                    }
                    reply
                }
            },
        }
    };
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    let mut builder = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(Body::from(reply.body)).unwrap_or_else(|e| {
        let mut r = Response::new(Body::from(format!("bad reply: {e}")));
        *r.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// `Authorization: Basic base64(user:password)` as a vendor expects it.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A raw HTTP exchange (ureq, statuses not turned into errors), for testing the
/// servers themselves: (status, headers with lower-cased names, body text).
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    let request = builder.body(body.to_vec()).expect("request");
    let mut response = agent
        .run(request)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, headers, text)
}

/// A vendor that is down: it holds a port on 127.0.0.1 (so no other test server can
/// take it) and closes every connection at once, without answering.
pub struct Down {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Down {
    /// Starts it.
    pub fn start() -> Down {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Down {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Down {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
