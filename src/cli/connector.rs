//! `steward connector list | describe NAME | call NAME OP --args JSON`: the connectors
//! of `[connectors.NAME]` in the configuration, for platform teams; and the connector
//! catalogue `steward check --config` / `--connectors DIR` checks calls against.
//!
//! Each connector is loaded in a host of its own, so one that fails to load is reported
//! with its error while the others still work.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value as Json, json};
use steward_connectors::{
    CallContext, ConnectorConfig, ConnectorError, Description, Host, HostSettings,
};
use steward_dsl::connectors::{ConnectorCatalogue, OperationSpec, Origin};

/// Exit code of `call` when the call failed but trying again may help
/// (`EX_TEMPFAIL`); a permanent failure exits with 1.
const EXIT_RETRYABLE: u8 = 75;

/// What `steward connector` was asked to do.
pub enum Command {
    /// Every configured connector: component, hosts, operations, load error.
    List { json: bool },
    /// One connector's operations and their arguments.
    Describe { name: String, json: bool },
    /// One call through the host.
    Call {
        name: String,
        operation: String,
        args: String,
        idempotency_key: Option<String>,
        attempt: u32,
    },
}

pub fn run(config: Option<&Path>, command: Command) -> Result<ExitCode> {
    let Configured {
        connectors,
        cache_dir,
        ..
    } = configured(config)?;
    let cache = cache_dir.as_deref();
    match command {
        Command::List { json } => list(&connectors, cache, json),
        Command::Describe { name, json } => {
            let cfg = find(&connectors, &name, config)?;
            let (_, description) =
                load(cfg, cache).map_err(|e| anyhow::anyhow!("connector `{}`: {e}", cfg.name))?;
            describe(cfg, &description, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call {
            name,
            operation,
            args,
            idempotency_key,
            attempt,
        } => {
            let cfg = find(&connectors, &name, config)?;
            call(cfg, cache, &operation, &args, idempotency_key, attempt)
        }
    }
}

/// What the configuration says about connectors.
struct Configured {
    /// The `[connectors.NAME]` tables, each named after its key.
    connectors: Vec<ConnectorConfig>,
    /// `[dispatch] cache_dir`: compiled components are kept there, as `steward run`
    /// keeps them.
    cache_dir: Option<PathBuf>,
    /// `[outbound] routes`: connectors whose actions are published, not executed.
    routes: Vec<String>,
}

fn configured(config: Option<&Path>) -> Result<Configured> {
    let config = super::run::load_config(config)?;
    Ok(Configured {
        connectors: config
            .connectors
            .into_iter()
            .map(|(name, mut cfg)| {
                cfg.name = name;
                cfg
            })
            .collect(),
        cache_dir: config.dispatch.cache_dir,
        routes: config.outbound.map(|o| o.routes).unwrap_or_default(),
    })
}

fn find<'a>(
    connectors: &'a [ConnectorConfig],
    name: &str,
    config: Option<&Path>,
) -> Result<&'a ConnectorConfig> {
    if let Some(c) = connectors.iter().find(|c| c.name == name) {
        return Ok(c);
    }
    let place = config.map_or_else(
        || "the configuration (no --config given)".to_owned(),
        |p| format!("`{}`", p.display()),
    );
    let known: Vec<&str> = connectors.iter().map(|c| c.name.as_str()).collect();
    if known.is_empty() {
        bail!("no connector `{name}`: {place} has no `[connectors.*]` tables");
    }
    bail!(
        "no connector `{name}` in {place}; configured: {}",
        known.join(", ")
    )
}

/// Loads one connector in a host of its own (compiled components cached in
/// `cache_dir` when given) and asks it to describe itself.
fn load(cfg: &ConnectorConfig, cache_dir: Option<&Path>) -> Result<(Host, Description), String> {
    let settings = HostSettings {
        max_concurrent_calls: 1,
        cache_dir: cache_dir.map(Path::to_path_buf),
        ..HostSettings::default()
    };
    // The errors name the connector; the callers show them beside its name already.
    let prefix = format!("connector `{}`: ", cfg.name);
    let host = Host::new(settings, vec![cfg.clone()]).map_err(|e| {
        let e = one_line(&e.to_string());
        e.strip_prefix(&prefix).map(str::to_owned).unwrap_or(e)
    })?;
    let description = host
        .describe(&cfg.name)
        .map_err(|e| format!("describe failed: {}", one_line(&e.to_string())))?;
    Ok((host, description))
}

/// Wasmtime's messages may span lines (pretty-printed byte dumps); a table row and a
/// diagnostic label need one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The description as the catalogue's operations (argument schemas read).
fn operations(d: &Description) -> Result<Vec<OperationSpec>, String> {
    d.operations
        .iter()
        .map(|o| OperationSpec::from_schema_text(&o.name, &o.doc, &o.args_schema))
        .collect()
}

fn list(connectors: &[ConnectorConfig], cache: Option<&Path>, as_json: bool) -> Result<ExitCode> {
    let mut failed = 0usize;
    let mut rows = Vec::new();
    for cfg in connectors {
        let loaded = load(cfg, cache).and_then(|(_, d)| operations(&d).map(|ops| (d, ops)));
        if loaded.is_err() {
            failed += 1;
        }
        rows.push((cfg, loaded));
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        let list: Vec<Json> = rows
            .iter()
            .map(|(cfg, loaded)| {
                let mut row = json!({
                    "name": cfg.name,
                    "component": cfg.component.display().to_string(),
                    "allow_hosts": cfg.allow_hosts,
                });
                match loaded {
                    Ok((d, ops)) => {
                        row["version"] = json!(d.version);
                        row["operations"] = json!(ops.len());
                    }
                    Err(e) => row["error"] = json!(e),
                }
                row
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
    } else if rows.is_empty() {
        eprintln!("no connectors configured (add `[connectors.NAME]` tables, see --config)");
    } else {
        let table: Vec<[String; 5]> = rows
            .iter()
            .map(|(cfg, loaded)| {
                let hosts = if cfg.allow_hosts.is_empty() {
                    "-".to_owned()
                } else {
                    cfg.allow_hosts.join(",")
                };
                let (ops, state) = match loaded {
                    Ok((d, ops)) => (
                        ops.len().to_string(),
                        format!("ok ({} {})", d.name, d.version),
                    ),
                    Err(e) => ("-".to_owned(), format!("error: {e}")),
                };
                [
                    cfg.name.clone(),
                    cfg.component.display().to_string(),
                    hosts,
                    ops,
                    state,
                ]
            })
            .collect();
        let header = ["NAME", "COMPONENT", "ALLOW HOSTS", "OPERATIONS", "STATE"].map(String::from);
        write_table(&mut out, Some(&header), &table)?;
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Columns padded to their widest cell; the last column is not padded.
fn write_table<const N: usize>(
    out: &mut impl Write,
    header: Option<&[String; N]>,
    rows: &[[String; N]],
) -> Result<()> {
    let mut widths = [0usize; N];
    for row in header.into_iter().chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in header.into_iter().chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn describe(cfg: &ConnectorConfig, d: &Description, as_json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if as_json {
        let ops: Vec<Json> = d
            .operations
            .iter()
            .map(|o| {
                let schema = serde_json::from_str::<Json>(&o.args_schema)
                    .unwrap_or_else(|_| Json::String(o.args_schema.clone()));
                json!({ "name": o.name, "doc": o.doc, "args_schema": schema })
            })
            .collect();
        let value = json!({ "name": d.name, "version": d.version, "operations": ops });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} {} ({})",
        d.name,
        d.version,
        cfg.component.display()
    )?;
    for op in &d.operations {
        writeln!(out)?;
        writeln!(out, "{}.{}  {}", cfg.name, op.name, op.doc)?;
        match OperationSpec::from_schema_text(&op.name, &op.doc, &op.args_schema) {
            Err(e) => writeln!(out, "  (arguments not readable: {e})")?,
            Ok(spec) if spec.params.is_empty() => writeln!(out, "  (no arguments)")?,
            Ok(spec) => {
                let rows: Vec<[String; 4]> = spec
                    .params
                    .iter()
                    .map(|p| {
                        let about = p
                            .schema
                            .get("description")
                            .and_then(Json::as_str)
                            .unwrap_or_default();
                        [
                            format!("  {}", p.name),
                            p.type_name(),
                            if p.required { "required" } else { "optional" }.to_owned(),
                            about.to_owned(),
                        ]
                    })
                    .collect();
                let mut lines = Vec::new();
                write_table(&mut lines, None, &rows)?;
                out.write_all(&lines)?;
                if spec.open {
                    writeln!(out, "  (other arguments are accepted too)")?;
                }
            }
        }
    }
    Ok(())
}

fn call(
    cfg: &ConnectorConfig,
    cache: Option<&Path>,
    operation: &str,
    args: &str,
    key: Option<String>,
    attempt: u32,
) -> Result<ExitCode> {
    let parsed: Json =
        serde_json::from_str(args).context("--args is not JSON (give a JSON object)")?;
    if !parsed.is_object() {
        bail!("--args must be a JSON object of named arguments, like '{{\"issue\": \"SMS-1\"}}'");
    }
    let (host, description) =
        load(cfg, cache).map_err(|e| anyhow::anyhow!("connector `{}`: {e}", cfg.name))?;
    if !description.operations.iter().any(|o| o.name == operation) {
        let offered: Vec<&str> = description
            .operations
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        bail!(
            "connector `{}` has no operation `{operation}`; it offers: {}",
            cfg.name,
            offered.join(", ")
        );
    }
    let key = key.unwrap_or_else(fresh_key);
    let ctx = CallContext {
        idempotency_key: key.clone(),
        attempt: attempt.max(1),
        deadline_ms: 0,
    };
    eprintln!("idempotency key: {key}");
    match host.invoke(&cfg.name, operation, &parsed.to_string(), &ctx) {
        Ok(result) => {
            let pretty = serde_json::from_str::<Json>(&result)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or(result);
            println!("{pretty}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: `{}.{operation}` failed: {e}", cfg.name);
            let retry_after = match &e {
                ConnectorError::Connector { retry_after_ms, .. } => *retry_after_ms,
                _ => None,
            };
            let retryable = e.is_retryable();
            match (retryable, retry_after) {
                (true, Some(ms)) => eprintln!("retryable: yes, after {ms} ms (retry-after-ms)"),
                (true, None) => eprintln!("retryable: yes"),
                (false, _) => eprintln!("retryable: no"),
            }
            if retryable {
                eprintln!(
                    "to retry the same call: --idempotency-key {key} --attempt {}",
                    attempt.max(1).saturating_add(1)
                );
            }
            Ok(ExitCode::from(if retryable { EXIT_RETRYABLE } else { 1 }))
        }
    }
}

/// A key no earlier call used: `cli-` + the time in nanoseconds and the process id.
fn fresh_key() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("cli-{nanos:x}-{:x}", std::process::id())
}

/// Where `steward check` takes connector descriptions from.
pub enum CatalogueSource<'a> {
    /// The `[connectors.NAME]` tables of this configuration file.
    Config(&'a Path),
    /// `NAME.wasm` components in this directory.
    Directory(&'a Path),
}

/// Describes the connectors `used` by the rules, from the configuration or a
/// directory of components. A used connector that is not configured (no table, no
/// file) is left out of the catalogue, which the checker reports as not available;
/// one that fails to load or describe is in it with the reason.
pub fn catalogue(
    source: CatalogueSource<'_>,
    used: &BTreeSet<String>,
) -> Result<ConnectorCatalogue> {
    let mut published = Vec::new();
    let (origin, configs, cache): (Origin, Vec<ConnectorConfig>, Option<PathBuf>) = match source {
        CatalogueSource::Config(path) => {
            let configured = configured(Some(path))?;
            published = configured.routes;
            let configs = configured
                .connectors
                .into_iter()
                .filter(|c| used.contains(&c.name))
                .collect();
            (
                Origin::Config(path.display().to_string()),
                configs,
                configured.cache_dir,
            )
        }
        CatalogueSource::Directory(dir) => {
            anyhow::ensure!(
                dir.is_dir(),
                "--connectors {}: not a directory",
                dir.display()
            );
            let configs = used
                .iter()
                .map(|name| (name, dir.join(format!("{name}.wasm"))))
                .filter(|(_, path)| path.is_file())
                .map(|(name, path): (&String, PathBuf)| ConnectorConfig::new(name.clone(), path))
                .collect();
            (Origin::Directory(dir.display().to_string()), configs, None)
        }
    };
    let mut catalogue = ConnectorCatalogue::new(origin);
    for name in published.into_iter().filter(|n| used.contains(n)) {
        catalogue.insert_published(name);
    }
    for cfg in &configs {
        match load(cfg, cache.as_deref()).and_then(|(_, d)| operations(&d)) {
            Ok(ops) => catalogue.insert_described(cfg.name.clone(), ops),
            Err(reason) => catalogue.insert_unavailable(cfg.name.clone(), reason),
        }
    }
    Ok(catalogue)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tables_pad_all_but_the_last_column() {
        let mut out = Vec::new();
        let header = ["A".to_owned(), "BB".to_owned(), "C".to_owned()];
        let rows = [["xyz".to_owned(), "1".to_owned(), "last one".to_owned()]];
        write_table(&mut out, Some(&header), &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A    BB  C\nxyz  1   last one\n"
        );
    }

    #[test]
    fn fresh_keys_differ() {
        assert_ne!(fresh_key(), fresh_key());
    }
}
