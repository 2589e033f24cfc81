//! `kip`: wires configuration, runtime, image source and the pull loop together.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use kip::{
    agent::{Agent, AgentOptions},
    config::{Args, Config},
    puller::{PullOptions, Puller},
    runtime, shutdown, source, telemetry,
};
use tracing::{error, info};

fn main() -> ExitCode {
    let config = match Config::from_args(Args::parse()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("kip: {errors}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_level, config.log_format);
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kip: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match tokio.block_on(run(config)) {
        Ok(code) => code,
        Err(e) => {
            error!(error = format!("{e:#}"), "kip failed");
            eprintln!("kip: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let cancel = shutdown::install().context("installing signal handlers")?;
    let runtime = runtime::connect(config.runtime, &config.endpoint, &config.containerd)?;
    let source = source::from_config(&config)?;
    info!(
        runtime = runtime.name(),
        endpoint = %config.endpoint,
        fetcher = source.name(),
        policy = ?config.pull_policy,
        pullers = config.num_pullers,
        interval_s = config.interval.as_secs(),
        once = config.once,
        "kip starting"
    );
    let puller = Puller::new(
        runtime,
        PullOptions {
            policy: config.pull_policy,
            concurrency: config.num_pullers,
            attempts: config.num_retries,
            attempt_timeout: config.pull_timeout,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        },
    );
    let agent = Agent::new(
        source,
        puller,
        AgentOptions {
            interval: config.interval,
            default_registry: config.default_registry.clone(),
            fetch_attempts: config.num_retries,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        },
    );
    if !config.once {
        agent.run(&cancel).await;
        return Ok(ExitCode::SUCCESS);
    }
    let report = agent.run_once(&cancel).await?;
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
