//! `kip`: wires configuration, runtime, image source, admin endpoint and the pull loop together.

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use eg_common::{binary, shutdown};
use kip::{
    admin::{self, Readiness},
    agent::{Agent, AgentOptions},
    config::{Args, Config, PullPolicy},
    metrics::Metrics,
    puller::{PullOptions, Puller},
    runtime, source,
};
use tracing::{info, warn};

fn main() -> ExitCode {
    binary::main(
        "kip",
        Some(2),
        Config::from_args(Args::parse()),
        |config| (config.logging.level, config.logging.format),
        run,
    )
}

async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let cancel = shutdown::install("stopping new pulls").context("installing signal handlers")?;
    let keyring = Arc::new(config.pull.keyring.clone());
    let runtime = runtime::connect(
        config.runtime.kind,
        &config.runtime.endpoint,
        keyring.clone(),
        &config.runtime.containerd,
    )?;
    let source = source::from_config(&config)?;
    let metrics = Arc::new(Metrics::for_runtime(runtime.name()));
    let ready = Arc::new(Readiness::default());
    info!(
        runtime = runtime.name(),
        endpoint = %config.runtime.endpoint,
        fetcher = source.name(),
        policy = ?config.pull.policy,
        pullers = config.pull.num_pullers,
        interval_s = config.pull.interval.as_secs(),
        once = config.once,
        "kip starting"
    );
    let puller = Puller::new(
        runtime,
        PullOptions {
            policy: config.pull.policy,
            concurrency: config.pull.num_pullers,
            attempts: config.pull.num_retries,
            attempt_timeout: config.pull.timeout,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            max_disk_percent: Some(config.pull.max_disk_usage_percent),
        },
        metrics.clone(),
    );
    // Always pulls only tags whose registry digest moved (a manifest HEAD per tag and cycle).
    let puller = match config.pull.policy {
        PullPolicy::Always => {
            puller.with_resolver(runtime::tag_resolver(&config.runtime.containerd, keyring)?)
        }
        PullPolicy::IfNotPresent => puller,
    };
    let agent = Agent::new(
        source,
        puller,
        AgentOptions {
            interval: config.pull.interval,
            default_registry: config.source.default_registry.clone(),
            fetch_attempts: config.pull.num_retries,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        },
        metrics.clone(),
        ready.clone(),
    );
    if config.once {
        return once(&agent, &cancel).await;
    }

    let admin = eg_common::admin::start(
        config.admin.addr,
        "KIP_ADMIN_ADDR",
        admin::router(ready, admin::NOT_READY, metrics),
        cancel.clone(),
    )
    .await?;
    // The loop stops new pulls and abandons running ones on cancellation; the grace period bounds
    // how long that may take.
    let grace = config.admin.shutdown_grace;
    tokio::select! {
        () = agent.run(&cancel) => {}
        () = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!(grace_s = grace.as_secs(), "shutdown grace expired; exiting");
        }
    }
    if let Some(admin) = admin {
        admin.stopped().await;
    }
    info!("kip stopped");
    Ok(ExitCode::SUCCESS)
}

async fn once(
    agent: &Agent,
    cancel: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<ExitCode> {
    let report = agent.run_once(cancel).await?;
    let failures = report.failures();
    if failures.is_empty() {
        info!(
            images = report.cycle.results.len(),
            "every image is present"
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("kip: {} image(s) not pulled:", failures.len());
    for failure in &failures {
        eprintln!("  {failure}");
    }
    Ok(ExitCode::FAILURE)
}
