//! What happens to a kernel after its launch: the monitor of its process (restart on an
//! unexpected end), restart, interrupt, shutdown and the idle culler.

use super::*;

impl KernelManager {
    /// Watches the current process; an unexpected end restarts the kernel (upstream's limits),
    /// or shuts it down when no websocket is connected.
    pub(super) fn spawn_monitor(
        self: &Arc<Self>,
        kernel: &Arc<Kernel>,
        mut exited: tokio::sync::watch::Receiver<bool>,
    ) {
        let generation = kernel.generation.load(Ordering::SeqCst);
        let manager = self.clone();
        let kernel = kernel.clone();
        let monitor: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            Box::pin(async move {
                tokio::select! {
                    _ = exited.wait_for(|e| *e) => {}
                    () = manager.cancel.cancelled() => return,
                }
                if kernel.stopping.load(Ordering::SeqCst)
                    || kernel.generation.load(Ordering::SeqCst) != generation
                    || manager.cancel.is_cancelled()
                {
                    return;
                }
                manager.kernel_died(&kernel).await;
            });
        tokio::spawn(monitor);
    }

    pub(super) async fn kernel_died(self: &Arc<Self>, kernel: &Arc<Kernel>) {
        if kernel.connections() == 0 {
            info!(kernel_id = %kernel.id, "kernel ended with no client connected; removing it");
            self.metrics.record_auto_restart("shutdown");
            let _ = self.shutdown(&kernel.id).await;
            return;
        }
        let attempt = {
            let mut r = kernel.restarts.lock().unwrap_or_else(|e| e.into_inner());
            // A kernel that ran for a while before dying starts a fresh count.
            if r.1.elapsed() > Duration::from_secs(30) {
                r.0 = 0;
            }
            r.0 += 1;
            r.1 = Instant::now();
            r.0
        };
        if attempt > self.settings.restart_limit {
            warn!(kernel_id = %kernel.id, restarts = attempt - 1, "kernel keeps dying; giving up");
            self.mark_dead(kernel);
            self.publish_counts();
            return;
        }
        warn!(kernel_id = %kernel.id, attempt, "kernel died; restarting it");
        kernel.bridge.pause();
        kernel
            .bridge
            .notify(bridge::status_notice(&kernel.session, "restarting"));
        kernel.activity.set_state("restarting");
        match self.relaunch(kernel).await {
            Ok(()) => self.metrics.record_auto_restart("restarted"),
            Err(e) => {
                warn!(kernel_id = %kernel.id, error = %e, "automatic restart failed");
                self.mark_dead(kernel);
            }
        }
        self.publish_counts();
    }

    /// Gives up on a kernel that keeps dying: clients are told `dead`, and the culler removes it.
    pub(super) fn mark_dead(&self, kernel: &Kernel) {
        kernel.activity.set_state("dead");
        kernel
            .bridge
            .notify(bridge::status_notice(&kernel.session, "dead"));
        self.metrics.record_auto_restart("dead");
    }

    /// Replaces the kernel's process with a new one (new ports, new key) and points the bridge at
    /// it. The old process is ended first.
    pub(super) async fn relaunch(
        self: &Arc<Self>,
        kernel: &Arc<Kernel>,
    ) -> Result<(), KernelError> {
        let _op = kernel.op.lock().await;
        if kernel.stopping.load(Ordering::SeqCst) {
            return Err(KernelError::new(404, "kernel is shutting down"));
        }
        kernel.generation.fetch_add(1, Ordering::SeqCst);
        let mut process = kernel.process.lock().await;
        process.keep_for_restart();
        process.terminate(Duration::from_secs(2)).await;
        process.cleanup();
        let new = self.launch(&kernel.request).await?;
        kernel.bridge.reconnect(new.connection().clone());
        info!(kernel_id = %kernel.id, process = %new.describe(), "kernel restarted");
        let exited = new.exited();
        *process = new;
        drop(process);
        kernel.activity.set_state("starting");
        self.spawn_monitor(kernel, exited);
        Ok(())
    }

    /// `POST /api/kernels/{id}/restart`: `shutdown_request` with `restart: true`, then a new
    /// process; returns once the new kernel answers (bounded by the kernel-info timeout).
    pub async fn restart(self: &Arc<Self>, id: &str) -> Result<Arc<Kernel>, KernelError> {
        let kernel = self.existing(id)?;
        kernel.bridge.pause();
        // The process is about to end on purpose: its monitor must not take that for a death.
        kernel.generation.fetch_add(1, Ordering::SeqCst);
        kernel.bridge.send_gateway(
            Channel::Control,
            kernel.gateway_message("shutdown_request", serde_json::json!({"restart": true})),
        );
        {
            let mut exited = kernel.process.lock().await.exited();
            let _ =
                tokio::time::timeout(self.settings.shutdown_wait, exited.wait_for(|e| *e)).await;
        }
        self.relaunch(&kernel).await.map_err(|e| {
            let mut err = KernelError::new(500, "Exception restarting kernel");
            err.traceback = Some(e.message);
            err
        })?;
        let _ = tokio::time::timeout(
            self.settings.bridge.kernel_info_timeout,
            kernel.bridge.wait_ready(),
        )
        .await;
        self.publish_counts();
        Ok(kernel)
    }

    /// `POST /api/kernels/{id}/interrupt`: `interrupt_request` on control for
    /// `interrupt_mode: message`, otherwise SIGINT (or `EG_ALTERNATE_SIGINT`, the spec's before the gateway's) to the
    /// kernel's process group.
    pub async fn interrupt(&self, id: &str) -> Result<(), KernelError> {
        let kernel = self.existing(id)?;
        if kernel.interrupt_mode_message() {
            kernel.bridge.send_gateway(
                Channel::Control,
                kernel.gateway_message("interrupt_request", serde_json::json!({})),
            );
            return Ok(());
        }
        let signum = self.settings.comm.interrupt_signal(
            kernel
                .spec
                .spec
                .env
                .get("EG_ALTERNATE_SIGINT")
                .map(String::as_str),
        );
        kernel
            .process
            .lock()
            .await
            .signal(signum)
            .await
            .map_err(|e| KernelError::new(500, format!("Interrupting kernel {id}: {e}")))
    }

    /// `DELETE /api/kernels/{id}`, culling and gateway shutdown: `shutdown_request`, a wait, then
    /// termination; the kernel is forgotten.
    pub async fn shutdown(&self, id: &str) -> Result<(), KernelError> {
        let kernel = self.existing(id)?;
        if kernel.stopping.swap(true, Ordering::SeqCst) {
            // Someone else is already ending it; wait for them.
            let _op = kernel.op.lock().await;
            return Ok(());
        }
        let _op = kernel.op.lock().await;
        kernel.bridge.send_gateway(
            Channel::Control,
            kernel.gateway_message("shutdown_request", serde_json::json!({"restart": false})),
        );
        let process = kernel.process.lock().await;
        let mut exited = process.exited();
        if tokio::time::timeout(self.settings.shutdown_wait, exited.wait_for(|e| *e))
            .await
            .is_err()
        {
            info!(kernel_id = %id, "kernel did not exit after shutdown_request; terminating it");
        }
        process.terminate(Duration::from_secs(2)).await;
        process.cleanup();
        drop(process);
        self.registry().kernels.remove(id);
        kernel.activity.set_state("dead");
        kernel.bridge.stop();
        info!(kernel_id = %id, "kernel shut down");
        self.publish_counts();
        Ok(())
    }

    /// Ends every kernel (gateway shutdown), all at once.
    pub async fn shutdown_all(&self) {
        let ids: Vec<String> = self.registry().kernels.keys().cloned().collect();
        if ids.is_empty() {
            return;
        }
        info!(kernels = ids.len(), "shutting down every kernel");
        let all = ids.iter().map(|id| self.shutdown(id));
        futures_util::future::join_all(all).await;
    }

    /// One pass of the culler: kernels idle past the timeout (not busy; not connected unless
    /// `EG_CULL_CONNECTED`), and dead ones.
    pub async fn cull_once(&self) {
        let timeout = self.settings.cull_idle_timeout;
        let now = SystemTime::now();
        let victims: Vec<(String, &'static str)> = self
            .list()
            .into_iter()
            .filter_map(|k| {
                let (state, last) = k.activity.get();
                if state == "dead" {
                    return Some((k.id.clone(), "dead"));
                }
                let idle = now.duration_since(last).unwrap_or_default();
                (!timeout.is_zero()
                    && idle > timeout
                    && state != "busy"
                    && (self.settings.cull_connected || k.connections() == 0))
                    .then(|| (k.id.clone(), "idle"))
            })
            .collect();
        for (id, why) in victims {
            info!(kernel_id = %id, reason = why, "culling kernel");
            self.metrics.record_cull(why);
            let _ = self.shutdown(&id).await;
        }
    }

    /// Runs the culler until shutdown.
    pub async fn run_culler(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.cull_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.cull_once().await,
                () = self.cancel.cancelled() => return,
            }
        }
    }
}
