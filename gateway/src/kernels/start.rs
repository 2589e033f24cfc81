//! Starting a kernel: the request checked against policy, the environment composed, the launcher
//! of the spec's kind chosen and its process monitored.

use super::*;

impl KernelManager {
    /// `POST /api/kernels`.
    pub async fn start(self: &Arc<Self>, req: StartRequest) -> Result<Arc<Kernel>, KernelError> {
        if self.cancel.is_cancelled() {
            return Err(KernelError::new(503, "The gateway is shutting down"));
        }
        let s = &self.settings;
        if let Some(max) = s.max_kernels
            && self.registry().kernels.len() >= max
        {
            return Err(KernelError::new(403, "Resource Limit"));
        }
        let mut env = policy::kernel_env(
            req.env.as_ref(),
            &s.client_envs,
            &s.inherited_envs,
            &self.gateway_env,
        )?;
        let user = policy::username(&env, &self.gateway_user);
        let env_given = req.env.is_some();
        if env_given {
            env.insert("KERNEL_USERNAME".into(), user.clone());
        }
        let name = req
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| s.default_kernel_name.clone())
            .to_lowercase();
        let launch_timeout = match env.get("KERNEL_LAUNCH_TIMEOUT") {
            Some(raw) => match raw.trim().parse::<f64>() {
                Ok(secs) if secs.is_finite() && secs > 0.0 => Duration::from_secs_f64(secs),
                _ => {
                    return Err(KernelError::new(
                        400,
                        format!("KERNEL_LAUNCH_TIMEOUT {raw:?}: expected a number of seconds"),
                    ));
                }
            },
            None => s.launch_timeout,
        };
        let kernel_id = match env.get("KERNEL_ID") {
            Some(id) if !policy::valid_kernel_id(id) => {
                return Err(KernelError::new(
                    400,
                    format!("KERNEL_ID {id:?} is not a lower-case UUID version 4"),
                ));
            }
            Some(id) => id.clone(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let Some(spec) = self.store.current().specs.get(&name).cloned() else {
            let mut e = KernelError::new(500, format!("No such kernel named {name}"));
            e.traceback = Some(format!(
                "Traceback (most recent call last):\njupyter_client.kernelspec.NoSuchKernel: {name}\n"
            ));
            return Err(e);
        };
        self.launcher_for(&spec, &name)?;
        let spec_config = spec
            .spec
            .metadata
            .get("process_proxy")
            .and_then(|p| p.get("config"))
            .and_then(Value::as_object);
        policy::authorize(
            &user,
            &spec.spec.display_name,
            spec_config,
            &s.authorized_users,
            &s.unauthorized_users,
        )?;
        let port_range = match spec_config
            .and_then(|c| c.get("port_range"))
            .and_then(Value::as_str)
        {
            Some(raw) => PortRange::parse(raw, s.min_port_range_size)
                .map_err(|m| KernelError::new(500, format!("{name}: {m}")))?,
            None => s.port_range,
        };
        {
            let mut reg = self.registry();
            let active = reg.kernels.len() + reg.pending.len();
            let users = reg.kernels.values().filter(|k| k.user == user).count()
                + reg.pending.iter().filter(|(_, u)| *u == user).count();
            policy::check_limits(s.max_kernels, s.max_kernels_per_user, active, &user, users)?;
            if reg.kernels.contains_key(&kernel_id)
                || reg.pending.iter().any(|(id, _)| *id == kernel_id)
            {
                return Err(KernelError::new(
                    409,
                    format!("Kernel already exists: {kernel_id}"),
                ));
            }
            reg.pending.push((kernel_id.clone(), user.clone()));
        }
        let started = Instant::now();
        let result = self
            .launch_new(
                &kernel_id,
                &name,
                &user,
                spec,
                env,
                port_range,
                launch_timeout,
                req.client,
            )
            .await;
        self.registry().pending.retain(|(id, _)| *id != kernel_id);
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(kernel) => {
                self.metrics.record_start("ok", seconds);
                self.registry()
                    .kernels
                    .insert(kernel_id.clone(), kernel.clone());
                self.publish_counts();
                Ok(kernel)
            }
            Err(e) => {
                self.metrics.record_start("error", seconds);
                Err(e)
            }
        }
    }

    /// The kernel's environment: the spec's `env` (with `${VAR}` filled from the request) under
    /// the request's, under the gateway's own values.
    pub(super) fn compose_env(
        &self,
        spec: &LoadedSpec,
        request_env: BTreeMap<String, String>,
        kernel_id: &str,
        user: &str,
    ) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = spec
            .spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), policy::fill_template(v, &request_env)))
            .collect();
        env.extend(request_env);
        env.insert("KERNEL_GATEWAY".into(), "1".into());
        env.insert("KERNEL_ID".into(), kernel_id.to_owned());
        env.insert("KERNEL_USERNAME".into(), user.to_owned());
        env.insert(
            "EG_IMPERSONATION_ENABLED".into(),
            if self.settings.impersonation {
                "True"
            } else {
                "False"
            }
            .into(),
        );
        for name in policy::WITHHELD {
            env.remove(name);
        }
        env
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn launch_new(
        self: &Arc<Self>,
        kernel_id: &str,
        name: &str,
        user: &str,
        spec: Arc<LoadedSpec>,
        request_env: BTreeMap<String, String>,
        port_range: PortRange,
        launch_timeout: Duration,
        client: Option<std::net::IpAddr>,
    ) -> Result<Arc<Kernel>, KernelError> {
        let env = self.compose_env(&spec, request_env, kernel_id, user);
        let request = LaunchRequest {
            kernel_id: kernel_id.to_owned(),
            spec_name: name.to_owned(),
            spec: spec.clone(),
            env,
            port_range,
            launch_timeout,
        };
        let process = self.launch(&request).await?;
        let activity = Arc::new(Activity::new("starting"));
        let bridge = match Bridge::start(
            kernel_id,
            process.connection().clone(),
            self.settings.bridge,
            activity.clone(),
            self.metrics.clone(),
        ) {
            Ok(b) => b,
            Err(e) => {
                process.terminate(Duration::from_secs(1)).await;
                process.cleanup();
                return Err(KernelError::new(500, format!("kernel bridge: {e}")));
            }
        };
        info!(
            kernel_id,
            kernelspec = name,
            user,
            process = %process.describe(),
            client = client.map(tracing::field::display),
            "kernel started"
        );
        let exited = process.exited();
        let kernel = Arc::new(Kernel {
            id: kernel_id.to_owned(),
            name: name.to_owned(),
            user: user.to_owned(),
            spec,
            request,
            activity,
            connections: AtomicUsize::new(0),
            process: tokio::sync::Mutex::new(process),
            bridge,
            generation: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            op: tokio::sync::Mutex::new(()),
            restarts: Mutex::new((0, Instant::now())),
            session: uuid::Uuid::new_v4().to_string(),
        });
        self.spawn_monitor(&kernel, exited);
        Ok(kernel)
    }

    /// The launcher of a spec's kind; 501 for kinds this gateway cannot start here.
    pub(super) fn launcher_for(
        &self,
        spec: &LoadedSpec,
        name: &str,
    ) -> Result<Arc<dyn Launcher>, KernelError> {
        match launcher_kind(spec).map_err(|m| KernelError::new(501, format!("{name}: {m}")))? {
            LauncherKind::Local => Ok(self.launchers.local.clone()),
            LauncherKind::Kubernetes => self.launchers.kubernetes.clone().ok_or_else(|| {
                KernelError::new(
                    501,
                    format!(
                        "{name}: kernelspec starts Kubernetes pods, but the gateway has no \
                         Kubernetes API configuration (in-cluster service account or KUBECONFIG)"
                    ),
                )
            }),
        }
    }

    pub(super) async fn launch(
        &self,
        request: &LaunchRequest,
    ) -> Result<Box<dyn KernelProcess>, KernelError> {
        let launcher = self.launcher_for(&request.spec, &request.spec_name)?;
        let timed_out = || {
            KernelError::new(
                500,
                format!(
                    "KernelID: '{}' launch timeout due to: Waited too long ({:.1}s) to get connection file",
                    request.kernel_id,
                    request.launch_timeout.as_secs_f64()
                ),
            )
        };
        // Launchers keep their own deadline (and clean up after it); this one is the backstop.
        let backstop = request.launch_timeout + Duration::from_secs(5);
        match tokio::time::timeout(backstop, launcher.launch(request)).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(LaunchError::Unsupported(m))) => Err(KernelError::new(501, m)),
            Ok(Err(LaunchError::Rejected { status, message })) => {
                Err(KernelError::new(status, message))
            }
            Ok(Err(LaunchError::Timeout(_))) | Err(_) => Err(timed_out()),
            Ok(Err(e)) => Err(KernelError::new(
                500,
                format!(
                    "Error occurred during launch of KernelID: {}: {e}",
                    request.kernel_id
                ),
            )),
        }
    }
}
