//! Cost of one connector invoke through the host, beside the raw wasmtime cost of the
//! same call, measured in the same run. `cargo bench -p steward-connectors`.
//!
//! The guest is tests/fixtures/echo.wat (returns its arguments, logs once).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use steward_connectors::{CallContext, ConnectorConfig, Host, HostSettings, LogRecord};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

mod raw {
    wasmtime::component::bindgen!({ path: "../wit", world: "connector" });
}
use raw::steward::connector::{host as h, types as t};

/// Host imports that do nothing: the raw baseline.
struct Stub;
impl t::Host for Stub {}
impl h::Host for Stub {
    fn http(&mut self, _: h::HttpRequest) -> Result<h::HttpResponse, String> {
        Err("stub".to_owned())
    }
    fn secret(&mut self, _: String) -> Option<String> {
        None
    }
    fn setting(&mut self, _: String) -> Option<String> {
        None
    }
    fn log(&mut self, _: h::LogLevel, _: String) {}
    fn now_ms(&mut self) -> u64 {
        0
    }
}

const ARGS: &str = r#"{"summary":"Disk full on db-1","priority":"High"}"#;

/// Median over rounds of the mean time per iteration.
fn measure(mut f: impl FnMut(), iters: u32) -> Duration {
    for _ in 0..iters / 10 {
        f();
    }
    let mut rounds: Vec<Duration> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed() / iters
        })
        .collect();
    rounds.sort();
    rounds[rounds.len() / 2]
}

fn main() {
    let path = common::fixture("echo");
    let bytes = std::fs::read(&path).unwrap();
    let ctx = CallContext {
        idempotency_key: "act-0001".to_owned(),
        attempt: 1,
        deadline_ms: 0,
    };

    // Raw wasmtime: same engine settings (pooling, epochs), no limiter, stub imports.
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(16)
        .total_core_instances(128)
        .total_memories(32)
        .total_tables(128)
        .max_memory_size(64 << 20)
        .linear_memory_keep_resident(256 * 1024)
        .table_keep_resident(256 * 1024);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(&engine, &bytes).unwrap();
    let mut linker: Linker<Stub> = Linker::new(&engine);
    raw::Connector::add_to_linker::<Stub, HasSelf<Stub>>(&mut linker, |s| s).unwrap();
    let pre = raw::ConnectorPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    let raw_ctx = t::Context {
        idempotency_key: ctx.idempotency_key.clone(),
        attempt: 1,
        deadline_ms: 0,
    };

    let mut store = Store::new(&engine, Stub);
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = pre.instantiate(&mut store).unwrap();
    let raw_call = measure(
        || {
            let out = instance
                .call_invoke(&mut store, "create", ARGS, &raw_ctx)
                .unwrap();
            assert!(out.is_ok());
        },
        50_000,
    );
    let raw_instantiate_call = measure(
        || {
            let mut store = Store::new(&engine, Stub);
            store.set_epoch_deadline(1_000);
            let instance = pre.instantiate(&mut store).unwrap();
            let out = instance
                .call_invoke(&mut store, "create", ARGS, &raw_ctx)
                .unwrap();
            assert!(out.is_ok());
        },
        20_000,
    );

    // The host: new store with limits and deadline, instance from the pool, call,
    // output checks.
    let settings = HostSettings {
        log_sink: Some(Arc::new(|_: &LogRecord| {})),
        ..HostSettings::default()
    };
    let host = Host::new(settings, vec![ConnectorConfig::new("echo", &path)]).unwrap();
    let host_invoke = measure(
        || {
            let out = host.invoke("echo", "create", ARGS, &ctx).unwrap();
            assert_eq!(out.len(), ARGS.len());
        },
        20_000,
    );

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "connector invoke, echo guest, {}-byte JSON args (median of 7 rounds)",
        ARGS.len()
    );
    println!(
        "raw wasmtime: call on a live instance        {:>8.2} µs",
        us(raw_call)
    );
    println!(
        "raw wasmtime: new store + instantiate + call {:>8.2} µs",
        us(raw_instantiate_call)
    );
    println!(
        "Host::invoke (limits, deadline, checks)      {:>8.2} µs  = {:.0} invokes/s on one core",
        us(host_invoke),
        1.0 / host_invoke.as_secs_f64()
    );
}
