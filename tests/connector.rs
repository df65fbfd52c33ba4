//! `steward connector list | describe | call` and `steward check --config /
//! --connectors`, run as the real binary against real components: a WAT fixture
//! (`tests/fixtures/connector/probe.wat`, built into a component here) and the
//! first-party connectors in `connectors/dist/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{root, stderr, stdout, steward};
use serde_json::{Value, json};
use wit_component::{ComponentEncoder, StringEncoding};

/// The probe fixture as a component of `steward:connector@0.1.0`, built once.
fn probe() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let wat =
            std::fs::read_to_string(root().join("tests/fixtures/connector/probe.wat")).unwrap();
        let mut module = wat::parse_str(&wat).unwrap();
        let mut resolve = wit_parser::Resolve::default();
        let (pkg, _) = resolve.push_path(root().join("connectors/wit")).unwrap();
        let world = resolve.select_world(&[pkg], Some("connector")).unwrap();
        wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
            .unwrap();
        let bytes = ComponentEncoder::default()
            .module(&module)
            .unwrap()
            .validate(true)
            .encode()
            .unwrap();
        std::fs::write(dir.path().join("probe.wasm"), bytes).unwrap();
        dir
    });
    dir.path().join("probe.wasm")
}

/// A temporary directory holding `steward.toml` with `toml` in it.
fn config(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A configuration with the probe, a connector whose component does not exist and one
/// whose component is not WebAssembly.
fn probe_config() -> (tempfile::TempDir, PathBuf) {
    config(&format!(
        "[connectors.probe]\ncomponent = {}\nallow_hosts = [\"127.0.0.1\"]\n\n\
         [connectors.ghost]\ncomponent = \"/nonexistent/ghost.wasm\"\n\n\
         [connectors.junk]\ncomponent = {}\n",
        toml_path(&probe()),
        toml_path(&root().join("tests/fixtures/connector/probe.wat")),
    ))
}

fn code(o: &std::process::Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn list_shows_every_connector_and_the_load_errors() {
    let (_dir, cfg) = probe_config();
    let o = steward()
        .args(["connector", "list", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let out = stdout(&o);
    assert_eq!(
        code(&o),
        1,
        "a connector failed to load: exit 1\n{out}{}",
        stderr(&o)
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{out}");
    assert_eq!(
        lines.len(),
        4,
        "a header and one line per connector:\n{out}"
    );
    let junk = lines.iter().find(|l| l.starts_with("junk")).unwrap();
    assert!(
        junk.contains("error: failed to parse WebAssembly module"),
        "{junk}"
    );
    let ghost = lines.iter().find(|l| l.starts_with("ghost")).unwrap();
    assert!(
        ghost.contains("/nonexistent/ghost.wasm")
            && ghost.contains("error: cannot read /nonexistent/ghost.wasm"),
        "{ghost}"
    );
    let probe_line = lines.iter().find(|l| l.starts_with("probe")).unwrap();
    assert!(
        probe_line.contains("127.0.0.1") && probe_line.contains("ok (probe 1.2.3)"),
        "{probe_line}"
    );
    let cols: Vec<&str> = probe_line.split_whitespace().collect();
    assert_eq!(cols[3], "3", "three operations: {probe_line}");

    let o = steward()
        .args(["connector", "list", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    let list: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(list[0]["name"], "ghost");
    assert!(list[0]["error"].as_str().unwrap().contains("cannot read"));
    assert_eq!(list[1]["name"], "junk");
    assert!(list[1]["error"].is_string());
    assert_eq!(list[2]["name"], "probe");
    assert_eq!(list[2]["operations"], 3);
    assert_eq!(list[2]["version"], "1.2.3");
    assert_eq!(list[2]["allow_hosts"], json!(["127.0.0.1"]));
}

#[test]
fn list_without_connectors_says_so() {
    let (_dir, cfg) = config("[engine]\nbatch = 10\n");
    let o = steward()
        .args(["connector", "list", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0);
    assert!(
        stderr(&o).contains("no connectors configured"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn describe_renders_operations_and_arguments() {
    let (_dir, cfg) = probe_config();
    let o = steward()
        .args(["connector", "describe", "probe", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.starts_with("probe 1.2.3 ("), "{out}");
    assert!(
        out.contains("probe.echo  Returns its arguments and the idempotency key"),
        "{out}"
    );
    let line = |start: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line `{start}` in\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        line("text"),
        ["text", "string", "required", "what", "to", "echo"]
    );
    assert_eq!(line("count"), ["count", "integer", "optional"]);
    assert_eq!(line("tags"), ["tags", "[string]", "optional"]);
    assert_eq!(
        line("reason"),
        ["reason", "string:", "bad|worse", "optional"]
    );
    assert!(
        out.contains("probe.busy  Fails with a retryable error"),
        "{out}"
    );
    assert!(out.contains("(no arguments)"), "{out}");

    let o = steward()
        .args(["connector", "describe", "probe", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let d: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(d["name"], "probe");
    assert_eq!(d["operations"][0]["name"], "echo");
    assert_eq!(
        d["operations"][0]["args_schema"]["required"],
        json!(["text"])
    );
}

#[test]
fn describe_names_what_is_wrong() {
    let (_dir, cfg) = probe_config();
    let o = steward()
        .args(["connector", "describe", "nope", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("no connector `nope` in")
            && stderr(&o).contains("configured: ghost, junk, probe"),
        "{}",
        stderr(&o)
    );
    let o = steward()
        .args(["connector", "describe", "ghost", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("cannot read /nonexistent/ghost.wasm"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn call_prints_the_result_or_the_typed_error() {
    let (_dir, cfg) = probe_config();
    let call = |extra: &[&str]| {
        steward()
            .args(["connector", "call", "--config"])
            .arg(&cfg)
            .args(extra)
            .output()
            .unwrap()
    };

    let o = call(&[
        "probe",
        "echo",
        "--args",
        r#"{"text": "hi"}"#,
        "--idempotency-key",
        "k-1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v, json!([{"text": "hi"}, "k-1"]));
    assert!(stderr(&o).contains("idempotency key: k-1"));

    // A fresh key each time without --idempotency-key.
    let keys: Vec<String> = (0..2)
        .map(|_| {
            let o = call(&["probe", "echo", "--args", r#"{"text": "hi"}"#]);
            assert!(o.status.success(), "{}", stderr(&o));
            let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
            v[1].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        keys[0].starts_with("cli-") && keys[0] != keys[1],
        "{keys:?}"
    );

    let o = call(&["probe", "busy"]);
    assert_eq!(code(&o), 75, "retryable: EX_TEMPFAIL");
    let err = stderr(&o);
    assert!(
        err.contains(
            "error: `probe.busy` failed: connector error (retryable): vendor busy: try later"
        ),
        "{err}"
    );
    assert!(err.contains("retryable: yes, after 1500 ms"), "{err}");
    assert!(
        err.contains("--idempotency-key cli-") && err.contains("--attempt 2"),
        "{err}"
    );
    assert!(stdout(&o).is_empty());

    let o = call(&["probe", "refuse", "--args", r#"{"reason": "bad"}"#]);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(
        err.contains("connector error: refused: bad input") && err.contains("retryable: no"),
        "{err}"
    );

    let o = call(&["probe", "echo", "--args", "[1, 2]"]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("--args must be a JSON object"),
        "{}",
        stderr(&o)
    );
    let o = call(&["probe", "echo", "--args", "{oops"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--args is not JSON"), "{}", stderr(&o));
    let o = call(&["probe", "ecko", "--args", r#"{"text": "hi"}"#]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o)
            .contains("connector `probe` has no operation `ecko`; it offers: echo, busy, refuse"),
        "{}",
        stderr(&o)
    );
    let o = call(&["ghost", "send"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
}

const PROBE_RULES: &str = r#"use connector probe

rule fine {
  on "x" do {
    probe.echo("hello ${event.subject}", 3)
    probe.echo(text: event.subject, tags: ["a", "b"])
    probe.refuse(reason: "worse")
  }
}
"#;

const BROKEN_RULES: &str = r#"use connector probe
use connector ghost

rule broken {
  on "x" do {
    probe.echoo(text: "x")
    probe.echo(txt: "x")
    probe.echo("x", 1, ["t"], 4)
    probe.echo(count: "three")
    probe.refuse(reason: "awful")
    ghost.send(payload: 1)
  }
}
"#;

fn rules(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_with_config_checks_calls_against_describe() {
    let (dir, cfg) = probe_config();
    let good = rules(dir.path(), "good.stw", PROBE_RULES);
    let o = steward()
        .arg("check")
        .arg(&good)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("ok: 1 file checked"));

    let bad = rules(dir.path(), "bad.stw", BROKEN_RULES);
    let o = steward()
        .arg("check")
        .arg(&bad)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    let codes: Vec<&str> = err
        .lines()
        .filter_map(|l| l.split("error[").nth(1))
        .map(|rest| &rest[..5])
        .collect();
    assert_eq!(
        codes,
        [
            "E0600", "E0601", "E0604", "E0602", "E0603", "E0604", "E0605", "E0605"
        ],
        "{err}"
    );
    let p = bad.display().to_string();
    for expected in [
        format!("{p}:2:15: error[E0600]: connector `ghost` cannot be loaded"),
        "cannot read /nonexistent/ghost.wasm".to_owned(),
        format!("{p}:6:11: error[E0601]: connector `probe` has no operation `echoo`"),
        "= help: did you mean `echo`?".to_owned(),
        format!("{p}:7:16: error[E0602]: `probe.echo` has no argument `txt`"),
        "= help: did you mean `text`?".to_owned(),
        format!("{p}:8:31: error[E0603]: `probe.echo` takes 3 arguments, 4 given"),
        "= help: `probe.echo` takes (text, count?, tags?)".to_owned(),
        format!("{p}:9:5: error[E0604]: `probe.echo` is missing the required argument `text`"),
        format!("{p}:9:16: error[E0605]: argument `count` of `probe.echo` must be an integer"),
        format!(
            "{p}:10:18: error[E0605]: argument `reason` of `probe.refuse` must be one of `bad`, `worse`"
        ),
    ] {
        assert!(err.contains(&expected), "missing `{expected}` in\n{err}");
    }
}

#[test]
fn check_with_a_directory_of_components() {
    let (dir, _) = probe_config();
    let comps = tempfile::tempdir().unwrap();
    std::fs::copy(probe(), comps.path().join("probe.wasm")).unwrap();
    let bad = rules(dir.path(), "bad.stw", BROKEN_RULES);
    let o = steward()
        .arg("check")
        .arg(&bad)
        .arg("--connectors")
        .arg(comps.path())
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(
        err.contains("error[E0600]: connector `ghost` is not available"),
        "{err}"
    );
    assert!(
        err.contains(&format!("no `ghost.wasm` in `{}`", comps.path().display())),
        "{err}"
    );
    assert!(err.contains("error[E0601]"), "{err}");

    let good = rules(dir.path(), "good.stw", PROBE_RULES);
    let o = steward()
        .arg("check")
        .arg(&good)
        .arg("--connectors")
        .arg(comps.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn check_without_connectors_notes_that_calls_were_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad = rules(dir.path(), "bad.stw", BROKEN_RULES);
    let o = steward().arg("check").arg(&bad).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("ok: 1 file checked\n"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains(
            "note: connector calls were not checked against the connectors' descriptions"
        ),
        "{}",
        stderr(&o)
    );
}

// ---------------------------------------------------------------- first-party components

/// `connectors/dist/NAME.wasm`: committed, and rebuilt from source by CI before the
/// tests run (`cargo run -p steward-connector-build`).
fn dist(names: &[&str]) -> Vec<PathBuf> {
    let paths: Vec<PathBuf> = names
        .iter()
        .map(|n| root().join(format!("connectors/dist/{n}.wasm")))
        .collect();
    for p in &paths {
        assert!(
            p.is_file(),
            "{} is missing: run `cargo run -p steward-connector-build`",
            p.display()
        );
    }
    paths
}

#[test]
fn the_examples_check_clean_against_the_first_party_connectors() {
    let paths = dist(&["jira", "slack", "pagerduty"]);
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("cache");
    // Compiled components are kept where `steward run` keeps them.
    let mut toml = format!("[dispatch]\ncache_dir = {}\n\n", toml_path(&cache_dir));
    for (name, path) in ["jira", "slack", "pagerduty"].iter().zip(&paths) {
        toml.push_str(&format!(
            "[connectors.{name}]\ncomponent = {}\n\n",
            toml_path(path)
        ));
    }
    let (dir, cfg) = config(&toml);
    let o = steward()
        .args(["check", "examples/iso20000", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("note:"), "{}", stderr(&o));
    let cached = std::fs::read_dir(&cache_dir).unwrap().count();
    assert!(cached >= 3, "{cached} files in the cache");

    let bad = rules(
        dir.path(),
        "bad.stw",
        r#"use connector jira
use connector slack
use connector pagerduty

rule r {
  on "x" do {
    jira.comment(event.subject)
    jira.transition(event.subject, "Done", "now")
    jira.create_issue(project: "SMS", summary: 42)
    slack.post(txt: "hi")
    pagerduty.resolve(key: event.subject)
    pagerduty.trigger(summary: "s", severity: "fatal")
  }
}
"#,
    );
    let o = steward()
        .arg("check")
        .arg(&bad)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    for expected in [
        "7:5: error[E0604]: `jira.comment` is missing the required argument `body`",
        "8:44: error[E0603]: `jira.transition` takes 2 arguments, 3 given",
        "= help: `jira.transition` takes (issue, status)",
        "9:39: error[E0605]: argument `summary` of `jira.create_issue` must be a string",
        "10:16: error[E0602]: `slack.post` has no argument `txt`",
        "= help: did you mean `text`?",
        "11:23: error[E0602]: `pagerduty.resolve` has no argument `key`",
        "12:37: error[E0605]: argument `severity` of `pagerduty.trigger` must be one of `critical`, `error`, `warning`, `info`",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in\n{err}");
    }
}

/// One HTTP request as the loopback server saw it.
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A loopback HTTP server answering one request with 200 `{"ok":true}`.
fn one_shot_server() -> (String, std::thread::JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let answer = "{\"ok\":true}";
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        )
        .unwrap();
        Seen {
            request_line: request_line.trim_end().to_owned(),
            headers,
            body,
        }
    });
    (url, handle)
}

#[test]
fn call_webhook_send_against_a_loopback_server() {
    let paths = dist(&["webhook"]);
    let (url, server) = one_shot_server();
    let (_dir, cfg) = config(&format!(
        "[connectors.webhook]\ncomponent = {}\nallow_hosts = [\"127.0.0.1\"]\nsettings = {{ url = {url:?} }}\n",
        toml_path(&paths[0])
    ));
    let o = steward()
        .args([
            "connector",
            "call",
            "webhook",
            "send",
            "--idempotency-key",
            "change-42/1/0",
        ])
        .args([
            "--args",
            r#"{"payload": {"change": "CHG-42", "approved": true}}"#,
        ])
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let result: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(result["status"], 200, "{result}");
    let seen = server.join().unwrap();
    assert_eq!(seen.request_line, "POST /hook HTTP/1.1");
    let header = |name: &str| {
        seen.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("idempotency-key"), Some("change-42/1/0"));
    assert_eq!(header("x-steward-attempt"), Some("1"));
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(
        String::from_utf8(seen.body).unwrap(),
        r#"{"change":"CHG-42","approved":true}"#
    );

    // A host not allowed: nothing sent, capability denied, not retryable.
    let (_dir, cfg) = config(&format!(
        "[connectors.webhook]\ncomponent = {}\nallow_hosts = [\"example.com\"]\nsettings = {{ url = {url:?} }}\n",
        toml_path(&paths[0])
    ));
    let o = steward()
        .args([
            "connector",
            "call",
            "webhook",
            "send",
            "--args",
            r#"{"payload": 1}"#,
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("capability denied") && stderr(&o).contains("retryable: no"),
        "{}",
        stderr(&o)
    );
}
