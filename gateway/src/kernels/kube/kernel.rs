//! A running kernel pod ([`KubeKernel`]) and the clean-up of what a failed launch created
//! ([`Cleanup`]).

use super::*;

/// Deletes what a launch created unless the launch succeeded (also when the launch is dropped).
pub(super) struct Cleanup {
    pub(super) cluster: Cluster,
    pub(super) namespace: String,
    pub(super) delete_namespace: bool,
    pub(super) created: Vec<(Kind, String)>,
    pub(super) armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed || (self.created.is_empty() && !self.delete_namespace) {
            return;
        }
        let cluster = self.cluster.clone();
        let namespace = std::mem::take(&mut self.namespace);
        let created = std::mem::take(&mut self.created);
        let delete_namespace = self.delete_namespace;
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            for (kind, name) in created.iter().rev() {
                if let Err(e) = cluster.delete_document(&namespace, *kind, name).await {
                    warn!(namespace, kind = kind.as_str(), name, error = %e, "cannot remove what a failed launch created");
                }
            }
            if delete_namespace && let Err(e) = cluster.delete_namespace(&namespace).await {
                warn!(namespace, error = %e, "cannot remove a failed launch's namespace");
            }
        });
    }
}
/// A running kernel pod.
pub struct KubeKernel {
    record: KernelRecord,
    cluster: Cluster,
    comm: CommSettings,
    exited: watch::Receiver<bool>,
    pod_rx: watch::Receiver<PodState>,
    restarting: AtomicBool,
}

impl KubeKernel {
    pub(super) fn start(
        record: KernelRecord,
        cluster: Cluster,
        pod_rx: watch::Receiver<PodState>,
        comm: CommSettings,
    ) -> Self {
        let (tx, exited) = watch::channel(false);
        let mut rx = pod_rx.clone();
        let uid = record.pod_uid.clone();
        tokio::spawn(async move {
            loop {
                let ended = match pod_json(&rx.borrow_and_update()) {
                    None => true,
                    Some((_, u)) if u != uid => true,
                    Some((pod, _)) => !k8s::classify(&pod).alive(),
                };
                if ended {
                    tx.send_replace(true);
                    break;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { break },
                    () = tx.closed() => break,
                }
            }
        });
        Self {
            record,
            cluster,
            comm,
            exited,
            pod_rx,
            restarting: AtomicBool::new(false),
        }
    }

    pub(super) fn comm_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.record.pod_ip.parse().ok()?;
        Some(SocketAddr::new(ip, self.record.comm_port?))
    }
}

#[async_trait]
impl KernelProcess for KubeKernel {
    fn connection(&self) -> &ConnectionInfo {
        &self.record.connection
    }

    fn describe(&self) -> String {
        format!("pod {}/{}", self.record.namespace, self.record.pod_name)
    }

    fn exited(&self) -> watch::Receiver<bool> {
        self.exited.clone()
    }

    async fn signal(&self, signum: i32) -> Result<(), LaunchError> {
        let addr = self.comm_addr().ok_or_else(|| {
            LaunchError::Failed(format!(
                "{}: its launcher gave no comm port, so signals cannot reach the kernel",
                self.describe()
            ))
        })?;
        comm::send_signal(addr, signum, self.comm.timeout)
            .await
            .map_err(|e| LaunchError::Failed(e.to_string()))
    }

    fn keep_for_restart(&self) {
        self.restarting.store(true, Ordering::SeqCst);
    }

    async fn terminate(&self, grace: Duration) {
        let r = &self.record;
        if let Some(addr) = self.comm_addr()
            && let Err(e) = comm::shutdown(addr, self.comm.timeout).await
        {
            debug!(kernel_id = %r.kernel_id, error = %e, "comm-port shutdown not delivered");
        }
        if let Err(e) = self.cluster.delete_pod(&r.namespace, &r.pod_name).await {
            warn!(kernel_id = %r.kernel_id, pod = %r.pod_name, error = %e, "cannot delete kernel pod");
        }
        if r.owns_namespace
            && !self.restarting.load(Ordering::SeqCst)
            && let Err(e) = self.cluster.delete_namespace(&r.namespace).await
        {
            warn!(kernel_id = %r.kernel_id, namespace = %r.namespace, error = %e, "cannot delete kernel namespace");
        }
        let mut rx = self.pod_rx.clone();
        let uid = r.pod_uid.clone();
        let gone = rx.wait_for(|p| {
            p.as_ref()
                .is_none_or(|p| p.metadata.uid.as_deref() != Some(&uid))
        });
        if tokio::time::timeout(grace.max(Duration::from_secs(5)), gone)
            .await
            .is_err()
        {
            info!(kernel_id = %r.kernel_id, pod = %r.pod_name, "kernel pod still terminating");
        }
    }
}
