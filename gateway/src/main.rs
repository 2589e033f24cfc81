//! `gateway`: wires configuration, the kernelspec store and its reloader, the kernel manager
//! with its local launcher and culler, the API and the admin endpoint together; at shutdown every
//! kernel is ended before the server drains.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::Parser;
use eg_common::{binary, shutdown, telemetry::LogFormat};
use gateway::{
    admin::{self, Readiness},
    api::{self, AppState},
    config::{Args, Config},
    kernels::{KernelManager, Launchers, kube, local::LocalLauncher},
    kernels_api::Sessions,
    kernelspecs::ListingOptions,
    metrics::Metrics,
    peer::{Peer, PlainListener},
    tls::TlsListener,
    watch::{self, Store},
};
use tracing::{info, warn};

fn main() -> ExitCode {
    binary::main(
        "gateway",
        None,
        Config::from_args(Args::parse()),
        |config| (config.log_level, LogFormat::Plain),
        run,
    )
}

async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let cancel = shutdown::install("answering held watches and draining")
        .context("installing signal handlers")?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(Readiness::default());
    let options = ListingOptions {
        base_url: config.base_url.clone(),
        default_kernel_name: config.default_kernel_name.clone(),
        allowed: config.allowed_kernels.clone(),
        authorized_users: config.authorized_users.clone(),
        unauthorized_users: config.unauthorized_users.clone(),
    };
    let dirs = config.kernel_dirs.clone();
    let store = {
        let metrics = metrics.clone();
        tokio::task::spawn_blocking(move || Store::new(dirs, options, metrics))
            .await
            .context("first kernelspec scan")?
    };
    let store = Arc::new(store);

    let admin = eg_common::admin::start(
        config.admin_addr,
        "EG_ADMIN_ADDR",
        admin::router(ready.clone(), admin::NOT_READY, metrics.clone()),
        cancel.clone(),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("EG_IP/EG_PORT {}: cannot listen", config.listen))?;
    let launchers = Launchers {
        local: Arc::new(LocalLauncher::new(config.runtime_dir.clone())),
        kubernetes: kube::from_environment(&config, metrics.clone(), cancel.clone()).await,
    };
    let kernels = KernelManager::new(
        launchers,
        store.clone(),
        config.kernels.clone(),
        metrics.clone(),
        cancel.clone(),
    );
    let culler = (!config.kernels.cull_idle_timeout.is_zero())
        .then(|| tokio::spawn(kernels.clone().run_culler()));
    let reloader = tokio::spawn(watch::run_reloader(
        store.clone(),
        config.rescan_interval,
        cancel.clone(),
    ));
    let current = store.current();
    info!(
        addr = %config.listen,
        base_url = %config.base_url,
        auth = config.auth_token.is_some(),
        tls = config.tls.is_some(),
        kernelspecs = current.listed,
        dirs = ?store.dirs(),
        "gateway listening"
    );
    let app = api::router(AppState {
        store: store.clone(),
        token: config.auth_token.clone().map(Arc::new),
        metrics,
        shutdown: cancel.clone(),
        kernels: kernels.clone(),
        sessions: Arc::new(Sessions::default()),
        list_kernels: config.list_kernels,
        ws_ping_interval: config.ws_ping_interval,
        cors: Arc::new(config.cors.clone()),
        authorized_origin: config.authorized_origin.clone().map(Arc::new),
        trust_xheaders: config.trust_xheaders,
    });
    ready.set(true);
    let stopping = {
        let cancel = cancel.clone();
        let ready = ready.clone();
        let kernels = kernels.clone();
        async move {
            cancel.cancelled().await;
            ready.set(false);
            // Kernels first: their websockets close with them, so the server can drain.
            kernels.shutdown_all().await;
        }
    };
    let grace = config.shutdown_grace;
    let expired = async {
        cancel.cancelled().await;
        tokio::time::sleep(grace).await;
        warn!(grace_s = grace.as_secs(), "shutdown grace expired; exiting");
    };
    match config.tls.clone() {
        Some(tls) => {
            // TLS handshakes are made side by side; accepted sockets get TCP_NODELAY.
            let listener = TlsListener::new(listener, tls);
            serve(listener, app, stopping, expired).await?;
        }
        None => serve(PlainListener(listener), app, stopping, expired).await?,
    }
    if let Some(culler) = culler {
        culler.abort();
    }
    let _ = reloader.await;
    if let Some(admin) = admin {
        admin.stopped().await;
    }
    info!("gateway stopped");
    Ok(ExitCode::SUCCESS)
}

/// Serves, each request with its connection's [`Peer`], until `stopping` completes and the
/// connections drain, or until `expired` does.
async fn serve<L>(
    listener: L,
    app: axum::Router,
    stopping: impl Future<Output = ()> + Send + 'static,
    expired: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
    for<'a> Peer: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let app = app.into_make_service_with_connect_info::<Peer>();
    let server = axum::serve(listener, app).with_graceful_shutdown(stopping);
    tokio::select! {
        result = server.into_future() => result.context("serving"),
        () = expired => Ok(()),
    }
}
