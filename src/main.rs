//! `steward`: check, replay and run ISO/IEC 20000-1 control rules.
//!
//! The CLI is the edge: it reads files, renders diagnostics and reports; the language
//! lives in `steward-dsl`, the engine in `steward-engine`.

mod cli;

/// mimalloc rather than the system allocator: the engine allocates many small,
/// short-lived values per event, and glibc's malloc spent a tenth of replay time
/// consolidating and unlinking free chunks (see BENCHMARKS.md). Built without its
/// transparent-huge-page advice (`no_thp`): with it, a RabbitMQ drain spent about a
/// fifth of the engine thread's time in the kernel, zeroing 2 MiB pages as they were
/// faulted in, and peaked a third higher (BENCHMARKS.md, "Intake, seventh day").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "steward",
    version,
    about = "Enforce ISO/IEC 20000-1 service-management controls across your tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check rule files: syntax, names, states, times; every problem of every file.
    Check {
        /// `.stw` files, or directories holding them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also check connector calls against the `describe` of the connectors in this
        /// configuration's `[connectors.NAME]` tables.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also check connector calls against the components `DIR/NAME.wasm`.
        #[arg(long, value_name = "DIR", conflicts_with = "config")]
        connectors: Option<PathBuf>,
    },
    /// Replay recorded events through the rules on a virtual clock; print every
    /// decision as one JSON object per line.
    Replay {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// CloudEvents in JSON, one per line.
        #[arg(long)]
        events: PathBuf,
        /// Start of the virtual clock (RFC 3339); default: the first event's time.
        #[arg(long)]
        from: Option<String>,
        /// End of the virtual clock (RFC 3339); default: the last event's time.
        #[arg(long)]
        until: Option<String>,
        /// Keep state in this SQLite file (or PostgreSQL database, given a
        /// `postgres://` URL): a later replay resumes from it.
        #[arg(long)]
        store: Option<PathBuf>,
        /// Stop after this many events (with --store: resume later).
        #[arg(long, hide = true)]
        limit: Option<usize>,
    },
    /// Run the engine: events from a file, stdin or a watched directory; state in SQLite.
    Run {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Configuration file (TOML); every value can also be set by a `STEWARD_…`
        /// environment variable.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Events file (JSON lines), or `-` for stdin.
        #[arg(long, conflicts_with = "watch")]
        events: Option<PathBuf>,
        /// Directory whose `.jsonl` files are read as they appear and grow.
        #[arg(long)]
        watch: Option<PathBuf>,
        /// SQLite database file (default `steward.db` in the working directory), or a
        /// PostgreSQL database as a `postgres://` URL.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Serve inbound webhooks on this address (e.g. `127.0.0.1:8080`):
        /// `POST /webhooks/jira`, `POST /webhooks/servicenow`, `GET /healthz`.
        #[arg(long)]
        listen: Option<String>,
        /// Serve `GET /healthz`, `/readyz` and `/metrics` (Prometheus) on this address
        /// (e.g. `127.0.0.1:9464`); `[ops] listen` in the configuration.
        #[arg(long)]
        ops_listen: Option<String>,
    },
    /// Evaluate one CEL expression, optionally against an event; print the value as JSON.
    Eval {
        expr: String,
        /// A CloudEvent (JSON) bound to `event`.
        #[arg(long)]
        event: Option<PathBuf>,
        /// A JSON object whose fields become variables.
        #[arg(long)]
        vars: Option<String>,
        /// Rule files whose policies, groups and calendars the expression may use
        /// (repeatable).
        #[arg(long = "rules", value_name = "FILE")]
        rules: Vec<PathBuf>,
    },
    /// Explain a diagnostic code, such as `E0201`.
    Explain { code: String },
    /// The connectors of the configuration: list them, describe one, call one.
    Connector {
        /// Configuration file (TOML) with the `[connectors.NAME]` tables.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: ConnectorCommand,
    },
}

#[derive(Subcommand)]
enum ConnectorCommand {
    /// Every configured connector: component, allowed hosts, operations, load errors.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One connector's operations, with their arguments (name, type, required).
    Describe {
        name: String,
        /// Print the connector's description as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Call one operation once; print the result as JSON.
    Call {
        name: String,
        operation: String,
        /// The arguments, a JSON object: `--args '{"issue": "SMS-1", "body": "hi"}'`.
        #[arg(long, default_value = "{}")]
        args: String,
        /// Idempotency key passed to the connector (default: a fresh one).
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Attempt number passed to the connector (1 for a first try).
        #[arg(long, default_value_t = 1)]
        attempt: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check {
            files,
            config,
            connectors,
        } => cli::check::run(&files, config.as_deref(), connectors.as_deref()),
        Command::Replay {
            files,
            events,
            from,
            until,
            store,
            limit,
        } => cli::replay::run(cli::replay::Options {
            files,
            events,
            from,
            until,
            store,
            limit,
        }),
        Command::Run {
            files,
            config,
            events,
            watch,
            db,
            listen,
            ops_listen,
        } => cli::run::run(cli::run::Options {
            files,
            config,
            events,
            watch,
            db,
            listen,
            ops_listen,
        }),
        Command::Eval {
            expr,
            event,
            vars,
            rules,
        } => cli::eval::run(&expr, event.as_deref(), vars.as_deref(), &rules),
        Command::Explain { code } => cli::explain(&code),
        Command::Connector { config, command } => {
            let command = match command {
                ConnectorCommand::List { json } => cli::connector::Command::List { json },
                ConnectorCommand::Describe { name, json } => {
                    cli::connector::Command::Describe { name, json }
                }
                ConnectorCommand::Call {
                    name,
                    operation,
                    args,
                    idempotency_key,
                    attempt,
                } => cli::connector::Command::Call {
                    name,
                    operation,
                    args,
                    idempotency_key,
                    attempt,
                },
            };
            cli::connector::run(config.as_deref(), command)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
