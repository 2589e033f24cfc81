//! The local launcher: the kernelspec's `argv` as a child process of the gateway, in its own
//! session and process group, with a connection file of free ports.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use gateway_core::{argv, policy::PortRange};
use rustix::process::{Pid, Signal, kill_process_group};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::launcher::{KernelProcess, LaunchError, LaunchRequest, Launcher};
use crate::bridge::ConnectionInfo;

/// Ports handed to kernels that are still running or starting: two concurrent starts never get
/// the same port, which is how kernels are lost to port races elsewhere.
#[derive(Debug, Default)]
pub struct PortReservations(Mutex<HashSet<u16>>);

impl PortReservations {
    /// Five free ports on 127.0.0.1 (within `range` unless it is `0..0`), reserved until
    /// released.
    pub fn take(&self, range: PortRange) -> Result<[u16; 5], LaunchError> {
        let mut reserved = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut ports = [0u16; 5];
        let mut held = Vec::with_capacity(5);
        let span = u32::from(range.hi.saturating_sub(range.lo)) + 1;
        let mut seed = u32::from(std::process::id() as u16) ^ reserved.len() as u32;
        for slot in &mut ports {
            let mut found = None;
            for attempt in 0..2000u32 {
                let port = if range.is_any() {
                    0
                } else {
                    seed = seed
                        .wrapping_mul(1_103_515_245)
                        .wrapping_add(12_345 + attempt);
                    range.lo + ((seed >> 8) % span) as u16
                };
                let Ok(listener) = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
                else {
                    continue;
                };
                let Ok(addr) = listener.local_addr() else {
                    continue;
                };
                if reserved.contains(&addr.port()) {
                    continue;
                }
                found = Some(addr.port());
                // Held until all five are chosen, so the five differ.
                held.push(listener);
                break;
            }
            *slot = found.ok_or_else(|| {
                LaunchError::Failed(format!("no free port for a kernel in {range}"))
            })?;
        }
        reserved.extend(ports);
        Ok(ports)
    }

    pub fn release(&self, ports: &[u16]) {
        let mut reserved = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for p in ports {
            reserved.remove(p);
        }
    }
}

/// Starts kernels as local processes.
pub struct LocalLauncher {
    runtime_dir: PathBuf,
    ports: Arc<PortReservations>,
}

impl LocalLauncher {
    pub fn new(runtime_dir: PathBuf) -> Self {
        Self {
            runtime_dir,
            ports: Arc::new(PortReservations::default()),
        }
    }
}

#[async_trait]
impl Launcher for LocalLauncher {
    async fn launch(&self, req: &LaunchRequest) -> Result<Box<dyn KernelProcess>, LaunchError> {
        let ports = self.ports.take(req.port_range)?;
        let info = ConnectionInfo {
            ip: "127.0.0.1".to_owned(),
            transport: "tcp".to_owned(),
            shell_port: ports[0],
            iopub_port: ports[1],
            stdin_port: ports[2],
            control_port: ports[3],
            hb_port: ports[4],
            key: uuid::Uuid::new_v4().to_string(),
            signature_scheme: "hmac-sha256".to_owned(),
            kernel_name: req.spec_name.clone(),
        };
        let result = self.spawn(req, info, &ports).await;
        if result.is_err() {
            self.ports.release(&ports);
        }
        result
    }
}

impl LocalLauncher {
    async fn spawn(
        &self,
        req: &LaunchRequest,
        info: ConnectionInfo,
        ports: &[u16; 5],
    ) -> Result<Box<dyn KernelProcess>, LaunchError> {
        let fail = |what: &str, e: std::io::Error| LaunchError::Failed(format!("{what}: {e}"));
        tokio::fs::create_dir_all(&self.runtime_dir)
            .await
            .map_err(|e| fail(&format!("runtime dir {}", self.runtime_dir.display()), e))?;
        let file = self
            .runtime_dir
            .join(format!("kernel-{}.json", req.kernel_id));
        let json = serde_json::to_vec_pretty(&info)
            .map_err(|e| LaunchError::Failed(format!("connection file: {e}")))?;
        write_private(&file, &json)
            .await
            .map_err(|e| fail(&format!("connection file {}", file.display()), e))?;

        let resource_dir = req.spec.dir.display().to_string();
        let connection_file = file.display().to_string();
        let port_range = req.port_range.to_string();
        let value_of = |name: &str| match name {
            "connection_file" => Some(connection_file.clone()),
            "kernel_id" => Some(req.kernel_id.clone()),
            "resource_dir" => Some(resource_dir.clone()),
            "port_range" => Some(port_range.clone()),
            "prefix" => Some("/usr".to_owned()),
            _ => None,
        };
        let argv: Vec<String> = req
            .spec
            .spec
            .argv
            .iter()
            .map(|a| argv::substitute(a, &value_of))
            .collect();
        let Some((program, args)) = argv.split_first() else {
            let _ = tokio::fs::remove_file(&file).await;
            return Err(LaunchError::Failed(format!(
                "kernelspec {} has an empty argv",
                req.spec_name
            )));
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(&req.env)
            .stdin(Stdio::null())
            .kill_on_drop(false);
        new_session(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = tokio::fs::remove_file(&file).await;
                return Err(fail(&format!("cannot run {program:?}"), e));
            }
        };
        let pid = child.id().unwrap_or(0) as i32;
        info!(kernel_id = %req.kernel_id, pid, argv = ?argv, "kernel process started");
        let (exited_tx, exited) = watch::channel(false);
        let kernel_id = req.kernel_id.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            debug!(kernel_id = %kernel_id, pid, status = ?status, "kernel process ended");
            exited_tx.send_replace(true);
        });
        Ok(Box::new(LocalKernel {
            pid,
            info,
            exited,
            file,
            ports: *ports,
            reservations: self.ports.clone(),
        }))
    }
}

/// Starts the kernel in a session of its own (as Jupyter does): it leads its own process group,
/// so interrupts and kills reach everything it started, and the scheduler's per-session groups
/// give each kernel its own share of the CPU instead of one share for all of them (with one
/// shared group, eight kernels starting at once took twice as long).
#[allow(unsafe_code)]
fn new_session(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2), which
    // is async-signal-safe and touches no state of the parent.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
}

async fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await?;
    f.write_all(bytes).await?;
    f.flush().await
}

struct LocalKernel {
    pid: i32,
    info: ConnectionInfo,
    exited: watch::Receiver<bool>,
    file: PathBuf,
    ports: [u16; 5],
    reservations: Arc<PortReservations>,
}

impl LocalKernel {
    fn group_signal(&self, sig: Signal) -> std::io::Result<()> {
        let pid = Pid::from_raw(self.pid).ok_or(std::io::ErrorKind::InvalidInput)?;
        kill_process_group(pid, sig).map_err(std::io::Error::from)
    }
}

#[async_trait]
impl KernelProcess for LocalKernel {
    fn connection(&self) -> &ConnectionInfo {
        &self.info
    }

    fn describe(&self) -> String {
        format!("pid {}", self.pid)
    }

    fn exited(&self) -> watch::Receiver<bool> {
        self.exited.clone()
    }

    async fn signal(&self, signum: i32) -> Result<(), LaunchError> {
        if *self.exited.borrow() {
            return Err(LaunchError::Failed("the kernel process has ended".into()));
        }
        let sig = Signal::from_named_raw(signum)
            .ok_or_else(|| LaunchError::Failed(format!("signal {signum} is not known")))?;
        self.group_signal(sig)
            .map_err(|e| LaunchError::Failed(format!("signal {signum}: {e}")))
    }

    async fn terminate(&self, grace: Duration) {
        let mut exited = self.exited.clone();
        if *exited.borrow() {
            // The leader is gone; helpers it started in its group go too.
            let _ = self.group_signal(Signal::KILL);
            return;
        }
        let _ = self.group_signal(Signal::TERM);
        if tokio::time::timeout(grace, exited.wait_for(|e| *e))
            .await
            .is_err()
        {
            warn!(
                pid = self.pid,
                "kernel ignored SIGTERM; killing its process group"
            );
        }
        let _ = self.group_signal(Signal::KILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), exited.wait_for(|e| *e)).await;
    }

    fn cleanup(&self) {
        let _ = std::fs::remove_file(&self.file);
        self.reservations.release(&self.ports);
    }

    fn connection_file(&self) -> Option<PathBuf> {
        Some(self.file.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ports_are_not_handed_out_twice() {
        let r = PortReservations::default();
        let a = r.take(PortRange::ANY).unwrap();
        let b = r.take(PortRange::ANY).unwrap();
        let all: HashSet<u16> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), 10);
        r.release(&a);
        assert_eq!(r.0.lock().unwrap().len(), 5);
    }

    #[test]
    fn ports_within_a_range() {
        let r = PortReservations::default();
        let range = PortRange {
            lo: 41000,
            hi: 42000,
        };
        let ports = r.take(range).unwrap();
        assert!(
            ports.iter().all(|p| (41000..=42000).contains(p)),
            "{ports:?}"
        );
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 5);
    }
}
