//! The host against hostile and well-behaved guests (tests/fixtures/*.wat). After every
//! failure the same host serves a normal call, to show a failure is that call's only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fixture;
use steward_connectors::{
    CallContext, ConnectorConfig, ConnectorError, Host, HostSettings, LoadError, LogLevel,
    LogRecord, SecretSource,
};

fn config(name: &str, fixture_name: &str) -> ConnectorConfig {
    ConnectorConfig::new(name, fixture(fixture_name))
}

fn ctx() -> CallContext {
    CallContext {
        idempotency_key: "act-1".to_owned(),
        attempt: 1,
        deadline_ms: 0,
    }
}

type Logs = Arc<Mutex<Vec<LogRecord>>>;

fn host_with_logs(mut connectors: Vec<ConnectorConfig>) -> (Host, Logs) {
    connectors.push(config("echo", "echo"));
    let logs: Logs = Arc::default();
    let sink = Arc::clone(&logs);
    let settings = HostSettings {
        log_sink: Some(Arc::new(move |r: &LogRecord| {
            sink.lock().unwrap().push(r.clone())
        })),
        ..HostSettings::default()
    };
    (Host::new(settings, connectors).unwrap(), logs)
}

fn host(connectors: Vec<ConnectorConfig>) -> Host {
    host_with_logs(connectors).0
}

/// The host still serves a normal call.
fn assert_usable(host: &Host) {
    assert_eq!(
        host.invoke("echo", "ping", r#"{"still":"fine"}"#, &ctx())
            .unwrap(),
        r#"{"still":"fine"}"#
    );
}

#[test]
fn well_behaved_guest_returns_json_and_logs() {
    let (host, logs) = host_with_logs(vec![]);
    let out = host.invoke(
        "echo",
        "create_issue",
        r#"{"summary":"x","n":[1,2]}"#,
        &ctx(),
    );
    assert_eq!(out.unwrap(), r#"{"summary":"x","n":[1,2]}"#);
    let logs = logs.lock().unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].connector, "echo");
    assert_eq!(logs[0].level, LogLevel::Info);
    assert_eq!(logs[0].message, "create_issue");
    drop(logs);
    let d = host.describe("echo").unwrap();
    assert_eq!((d.name.as_str(), d.version.as_str()), ("fixture", "0.1.0"));
    assert!(d.operations.is_empty());
    assert_eq!(host.connectors(), ["echo"]);
}

#[test]
fn endless_loop_times_out_within_the_deadline() {
    let mut c = config("loop", "endless_loop");
    c.timeout_ms = 200;
    let host = host(vec![c]);
    for _ in 0..2 {
        let start = Instant::now();
        let err = host.invoke("loop", "spin", "{}", &ctx()).unwrap_err();
        let elapsed = start.elapsed();
        assert_eq!(err, ConnectorError::Timeout);
        assert!(err.is_retryable());
        assert!(elapsed >= Duration::from_millis(190), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(200 + 300), "{elapsed:?}");
        assert_usable(&host);
    }
}

#[test]
fn context_deadline_earlier_than_timeout_wins() {
    let mut c = config("loop", "endless_loop");
    c.timeout_ms = 60_000;
    let host = host(vec![c]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let start = Instant::now();
    let call = CallContext {
        deadline_ms: now + 150,
        ..ctx()
    };
    assert_eq!(
        host.invoke("loop", "spin", "{}", &call).unwrap_err(),
        ConnectorError::Timeout
    );
    assert!(
        start.elapsed() < Duration::from_millis(150 + 300),
        "{:?}",
        start.elapsed()
    );
    // A deadline already past fails at once, without running the guest.
    let past = CallContext {
        deadline_ms: now - 1,
        ..ctx()
    };
    assert_eq!(
        host.invoke("loop", "spin", "{}", &past).unwrap_err(),
        ConnectorError::Timeout
    );
    assert_usable(&host);
}

#[test]
fn allocating_past_the_limit_fails_with_memory_limit() {
    let mut c = config("hog", "memory_hog");
    c.memory_mb = 16;
    let host = host(vec![c]);
    for _ in 0..3 {
        let err = host.invoke("hog", "eat", "{}", &ctx()).unwrap_err();
        assert_eq!(err, ConnectorError::MemoryLimit);
        assert!(!err.is_retryable());
        assert_usable(&host);
    }
}

#[test]
fn unreachable_fails_with_a_trap() {
    let host = host(vec![config("trap", "unreachable")]);
    for _ in 0..2 {
        match host.invoke("trap", "boom", "{}", &ctx()).unwrap_err() {
            ConnectorError::Trap(msg) => assert!(msg.contains("unreachable"), "{msg}"),
            other => panic!("expected a trap, got {other:?}"),
        }
        assert_usable(&host);
    }
}

#[test]
fn oversized_or_non_json_output_is_bad_output() {
    let host = host(vec![config("huge", "huge_output")]);
    match host.invoke("huge", "dump", "{}", &ctx()).unwrap_err() {
        ConnectorError::BadOutput(reason) => assert!(reason.contains("4194304 bytes"), "{reason}"),
        other => panic!("expected bad output, got {other:?}"),
    }
    assert_usable(&host);
    match host.invoke("echo", "x", "not json", &ctx()).unwrap_err() {
        ConnectorError::BadOutput(reason) => assert!(reason.starts_with("not JSON"), "{reason}"),
        other => panic!("expected bad output, got {other:?}"),
    }
    assert_usable(&host);
}

#[test]
fn http_to_a_host_not_allowed_is_denied_and_nothing_is_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut c = config("http", "http_status");
    c.allow_hosts = vec!["api.example.com".to_owned(), "*.example.org".to_owned()];
    let host = host(vec![c]);
    for (url, denied) in [
        (format!("http://127.0.0.1:{port}/"), "127.0.0.1"),
        (format!("http://localhost:{port}/"), "localhost"),
        (
            format!("http://api.example.com@127.0.0.1:{port}/"),
            "127.0.0.1",
        ),
        (
            format!("http://127.0.0.1:{port}/api.example.com"),
            "127.0.0.1",
        ),
        (
            format!("https://127.0.0.1:{port}/?h=x.example.org"),
            "127.0.0.1",
        ),
        (
            format!("http://example.org.127.0.0.1.nip.io:{port}/"),
            "example.org.127.0.0.1.nip.io",
        ),
    ] {
        let err = host.invoke("http", "get", &url, &ctx()).unwrap_err();
        assert_eq!(
            err,
            ConnectorError::CapabilityDenied {
                host: denied.to_owned()
            },
            "{url}"
        );
        assert_usable(&host);
    }
    // Non-HTTP schemes and relative URLs never reach the network either.
    for url in ["file:///etc/passwd", "/relative", "gopher://127.0.0.1/"] {
        match host.invoke("http", "get", url, &ctx()).unwrap_err() {
            ConnectorError::Connector {
                retryable: false,
                message,
                ..
            } => {
                assert!(message.contains("http(s)"), "{message}")
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the listener saw a connection: {other:?}"),
    }
}

/// A one-shot HTTP server on loopback: answers one request with `response`, hands the
/// request's head back.
fn serve_once(response: Vec<u8>) -> (u16, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let head = read_head(&mut stream);
        let _ = stream.write_all(&response);
        let _ = stream.flush();
        head
    });
    (port, handle)
}

fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn http_to_an_allowed_host_returns_the_status() {
    let (port, server) = serve_once(
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec(),
    );
    let mut c = config("http", "http_status");
    c.allow_hosts = vec!["127.0.0.1".to_owned()];
    let host = host(vec![c]);
    let out = host.invoke(
        "http",
        "get",
        &format!("http://127.0.0.1:{port}/rest/api/3/issue"),
        &ctx(),
    );
    assert_eq!(out.unwrap(), "201");
    let head = server.join().unwrap();
    assert!(
        head.starts_with("GET /rest/api/3/issue HTTP/1.1\r\n"),
        "{head}"
    );
    assert_usable(&host);
}

#[test]
fn oversized_http_response_is_refused() {
    let body = vec![b'x'; 64 * 1024];
    let mut response =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    response.extend_from_slice(&body);
    let (port, server) = serve_once(response);
    let mut c = config("http", "http_status");
    c.allow_hosts = vec!["127.0.0.1".to_owned()];
    c.max_response_bytes = 1024;
    let host = host(vec![c]);
    let err = host
        .invoke("http", "get", &format!("http://127.0.0.1:{port}/"), &ctx())
        .unwrap_err();
    match &err {
        ConnectorError::Http {
            status: Some(200),
            message,
        } => assert!(message.contains("1024"), "{message}"),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
    assert!(!err.is_retryable());
    server.join().unwrap();
    assert_usable(&host);
}

#[test]
fn transport_error_is_an_http_error_without_status() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = config("http", "http_status");
    c.allow_hosts = vec!["127.0.0.1".to_owned()];
    let host = host(vec![c]);
    let err = host
        .invoke("http", "get", &format!("http://127.0.0.1:{port}/"), &ctx())
        .unwrap_err();
    assert!(
        matches!(err, ConnectorError::Http { status: None, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_usable(&host);
}

#[test]
fn secrets_are_given_by_name_and_redacted_from_logs_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("token");
    std::fs::write(&secret_file, "s3cr3t-T0ken\n").unwrap();
    let mut c = config("leaky", "leaky_secret");
    c.secrets
        .insert("token".to_owned(), SecretSource::File(secret_file));
    c.secrets.insert(
        "dir".to_owned(),
        SecretSource::Env("CARGO_MANIFEST_DIR".to_owned()),
    );
    let (host, logs) = host_with_logs(vec![c]);
    for name in ["token", "dir"] {
        let err = host.invoke("leaky", "leak", name, &ctx()).unwrap_err();
        assert_eq!(
            err,
            ConnectorError::Connector {
                retryable: false,
                message: "[REDACTED]".to_owned(),
                retry_after_ms: None
            }
        );
    }
    let logs = logs.lock().unwrap();
    assert_eq!(logs.len(), 2);
    assert!(
        logs.iter()
            .all(|r| r.message == "[REDACTED]" && r.level == LogLevel::Warn)
    );
    drop(logs);
    // An unconfigured name gets nothing; the guest then says "retry in 1.5 s".
    let err = host.invoke("leaky", "leak", "HOME", &ctx()).unwrap_err();
    assert_eq!(
        err,
        ConnectorError::Connector {
            retryable: true,
            message: "no secret".to_owned(),
            retry_after_ms: Some(1500)
        }
    );
    assert!(err.is_retryable());
    assert_usable(&host);
}

#[test]
fn settings_are_given_by_name() {
    let mut c = config("setting", "setting");
    c.settings
        .insert("base_url".to_owned(), r#""http://127.0.0.1:9""#.to_owned());
    let host = host(vec![c]);
    assert_eq!(
        host.invoke("setting", "get", "base_url", &ctx()).unwrap(),
        r#""http://127.0.0.1:9""#
    );
    // An unconfigured name gets nothing (settings are not secrets or the environment).
    for name in ["HOME", "token"] {
        assert_eq!(
            host.invoke("setting", "get", name, &ctx()).unwrap_err(),
            ConnectorError::Connector {
                retryable: false,
                message: "no setting".to_owned(),
                retry_after_ms: None
            }
        );
    }
    assert_usable(&host);
}

#[test]
fn unknown_connector_and_bad_configuration() {
    let host = host(vec![]);
    assert_eq!(
        host.invoke("jira", "x", "{}", &ctx()).unwrap_err(),
        ConnectorError::NotFound("jira".to_owned())
    );
    for bad in [
        vec!["*".to_owned()],
        vec!["https://x.com".to_owned()],
        vec!["*.com".to_owned()],
    ] {
        let mut c = config("bad", "echo");
        c.allow_hosts = bad;
        let err = Host::new(HostSettings::default(), vec![c]).unwrap_err();
        assert!(matches!(err, LoadError::Config { .. }), "{err}");
    }
    let twice = vec![config("a", "echo"), config("a", "echo")];
    assert!(matches!(
        Host::new(HostSettings::default(), twice).unwrap_err(),
        LoadError::Config { .. }
    ));
    let missing = ConnectorConfig::new("gone", "/nonexistent/x.wasm");
    assert!(matches!(
        Host::new(HostSettings::default(), vec![missing]).unwrap_err(),
        LoadError::Read { .. }
    ));
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("x.wasm");
    std::fs::write(&not_wasm, b"not wasm").unwrap();
    assert!(matches!(
        Host::new(
            HostSettings::default(),
            vec![ConnectorConfig::new("x", not_wasm)]
        )
        .unwrap_err(),
        LoadError::Component { .. }
    ));
}

#[test]
fn config_from_toml_shaped_json() {
    let c: ConnectorConfig = serde_json::from_str(
        r#"{"component":"jira.wasm","allow_hosts":["*.atlassian.net"],
            "secrets":{"token":{"env":"JIRA_TOKEN"},"email":{"file":"/run/secrets/email"}},
            "timeout_ms":5000}"#,
    )
    .unwrap();
    assert_eq!(c.timeout_ms, 5000);
    assert_eq!(c.memory_mb, 64);
    assert_eq!(
        c.secrets["token"],
        SecretSource::Env("JIRA_TOKEN".to_owned())
    );
    assert!(serde_json::from_str::<ConnectorConfig>(r#"{"component":"x","allow":[]}"#).is_err());
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let settings = HostSettings {
        cache_dir: Some(cache.clone()),
        ..HostSettings::default()
    };
    let load = || Host::new(settings.clone(), vec![config("echo", "echo")]).unwrap();
    let files = || {
        let mut v: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    assert_usable(&load());
    let written = files();
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(written[0].extension().is_some_and(|e| e == "cwasm"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
    let modified = std::fs::metadata(&written[0]).unwrap().modified().unwrap();
    assert_usable(&load());
    assert_eq!(
        std::fs::metadata(&written[0]).unwrap().modified().unwrap(),
        modified
    );
    // A corrupted artifact is ignored and replaced.
    let mut bytes = std::fs::read(&written[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&written[0], &bytes).unwrap();
    assert_usable(&load());
    assert_ne!(std::fs::read(&written[0]).unwrap(), bytes);
    assert_eq!(files().len(), 1);
    // A directory others can write to is not used.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let settings = HostSettings {
            cache_dir: Some(open.clone()),
            ..HostSettings::default()
        };
        assert_usable(&Host::new(settings, vec![config("echo", "echo")]).unwrap());
        assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);
    }
}

#[test]
fn calls_run_concurrently_while_a_guest_loops() {
    let mut c = config("loop", "endless_loop");
    c.timeout_ms = 300;
    let host = Arc::new(host(vec![c]));
    let looping = {
        let host = Arc::clone(&host);
        std::thread::spawn(move || host.invoke("loop", "spin", "{}", &ctx()))
    };
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let host = Arc::clone(&host);
            std::thread::spawn(move || {
                for j in 0..25 {
                    let args = format!(r#"{{"worker":{i},"call":{j}}}"#);
                    assert_eq!(host.invoke("echo", "op", &args, &ctx()).unwrap(), args);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(
        looping.join().unwrap().unwrap_err(),
        ConnectorError::Timeout
    );
}
