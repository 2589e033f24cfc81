//! Configuration: the `EG_*` variables upstream's container reads (and `--flag` twins), parsed once
//! into [`Config`].
//!
//! Clap reads raw strings (so `--help` lists each variable with its default); [`Config::from_args`]
//! validates them all in one pass and reports every bad variable at once.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

mod https;
pub mod kube;
mod remote;

use clap::Parser;
use gateway_core::policy::{ClientEnvs, PortRange};
use tracing::level_filters::LevelFilter;

use crate::{
    bridge::Limits,
    comm::{CommSettings, signal_number},
    cors::{Cors, CorsSettings},
    kernels::KernelSettings,
    response::{ProhibitedIps, ResponseSettings},
    tls::{self, TlsFiles, TlsVersions},
};

use self::{
    https::{check_tls, parse_authorized_origin},
    remote::check_remote,
};

eg_common::settings! {
    /// Command line and environment of the `gateway` binary.
    #[derive(Debug, Clone, Parser)]
    #[command(
        name = "gateway",
        version,
        about = "Enterprise-Gateway-compatible kernel gateway: kernelspecs, kernels, kernel pods",
        long_about = "Serves Enterprise Gateway's REST and websocket API: the kernelspecs found \
            in the Jupyter data path (with a watch: GET /api/kernelspecs?wait=SECONDS with \
            If-None-Match is held until the listing changes), /api/kernels and /api/sessions, and \
            each kernel's websocket (/api/kernels/{id}/channels). Local kernelspecs run as local \
            processes; KubernetesProcessProxy kernelspecs run as pods through the Kubernetes API \
            (in-cluster service account or KUBECONFIG).\n\n\
            Every option can also be set through the environment variable shown beside it; a flag \
            wins over its variable."
    )]
    pub struct Args {
        /// IP address to listen on.
        ip: "EG_IP" default "0.0.0.0",

        /// Port to listen on.
        port: "EG_PORT" default "8888",

        /// Base path every route is served under (KG_BASE_URL is read when this is unset).
        base_url: "EG_BASE_URL",

        /// Token clients must present (`Authorization: token …` or `?token=`); empty: no check
        /// (KG_AUTH_TOKEN is read when this is unset).
        #[arg(hide_env_values = true)]
        auth_token: "EG_AUTH_TOKEN",

        /// Kernelspec names the listing shows: a JSON array or a comma list; `null` or empty: all.
        allowed_kernels: "EG_ALLOWED_KERNELS",

        /// The `default` of the kernelspec listing.
        default_kernel_name: "EG_DEFAULT_KERNEL_NAME" default "python_docker",

        /// Comma list of users `?user=` may name (unset: no global list); a spec's own
        /// `authorized_users` takes precedence.
        authorized_users: "EG_AUTHORIZED_USERS",

        /// Comma list of users `?user=` may never name.
        unauthorized_users: "EG_UNAUTHORIZED_USERS" default "root",

        /// DEBUG, INFO, WARNING, ERROR, CRITICAL (any case) or Python's numbers (10…50). RUST_LOG,
        /// when set, takes precedence.
        log_level: "EG_LOG_LEVEL" default "INFO",

        /// Address of the admin endpoint (/livez, /readyz, /metrics); `off` disables it.
        admin_addr: "EG_ADMIN_ADDR" default "0.0.0.0:9091",

        /// Seconds between full rescans of the kernelspec directories (filesystem notifications are
        /// seen at once; the rescan catches what they miss).
        rescan_interval: "EG_KERNELSPEC_RESCAN_INTERVAL" default "30",

        /// Seconds to finish after SIGTERM/SIGINT (every kernel is shut down first) before exiting
        /// anyway.
        shutdown_grace: "EG_SHUTDOWN_GRACE" default "10",

        /// Whether `GET /api/kernels` and `GET /api/sessions` answer (otherwise 403). Jupyter
        /// Server's gateway client needs it.
        list_kernels: "EG_LIST_KERNELS" default "True",

        /// Most kernels running and starting at once (unset: no limit).
        max_kernels: "EG_MAX_KERNELS",

        /// Most kernels per `KERNEL_USERNAME` (-1: no limit).
        max_kernels_per_user: "EG_MAX_KERNELS_PER_USER" default "-1",

        /// Comma list of request `env` names (besides every `KERNEL_*`) a client may set; `*`: all
        /// (EG_ENV_WHITELIST is read when this is unset).
        client_envs: "EG_CLIENT_ENVS",

        /// Comma list of the gateway's own variables every kernel inherits
        /// (EG_ENV_PROCESS_WHITELIST is read when this is unset).
        inherited_envs: "EG_INHERITED_ENVS",

        /// Seconds a kernel may take to start; a request's KERNEL_LAUNCH_TIMEOUT wins.
        kernel_launch_timeout: "EG_KERNEL_LAUNCH_TIMEOUT" default "30",

        /// Seconds the gateway waits for a new kernel's kernel_info_reply before opening a
        /// websocket anyway.
        kernel_info_timeout: "EG_KERNEL_INFO_TIMEOUT" default "60",

        /// Kernel ports, `LOWER..UPPER`; `0..0`: any free port. A spec's `port_range` wins.
        port_range: "EG_PORT_RANGE" default "0..0",

        /// Smallest span a port range may have.
        min_port_range_size: "EG_MIN_PORT_RANGE_SIZE" default "1000",

        /// Exported to kernels as EG_IMPERSONATION_ENABLED=True|False.
        impersonation_enabled: "EG_IMPERSONATION_ENABLED" default "False",

        /// Seconds a kernel may stay idle before it is shut down; 0: never.
        cull_idle_timeout: "EG_CULL_IDLE_TIMEOUT" default "43200",

        /// Seconds between culling passes.
        cull_interval: "EG_CULL_INTERVAL" default "60",

        /// Whether kernels with a websocket open may be culled.
        cull_connected: "EG_CULL_CONNECTED" default "False",

        /// Seconds between websocket pings; 0: none. A peer silent for three intervals (at least
        /// 30 s) is disconnected.
        ws_ping_interval: "EG_WS_PING_INTERVAL_SECS" default "30",

        /// Messages kept for a disconnected session until it reconnects (0: none are kept); the
        /// oldest go first and are counted in gateway_messages_dropped_total.
        ws_buffer_max_messages: "EG_WS_BUFFER_MAX_MESSAGES" default "10000",

        /// Bytes kept for a disconnected session.
        ws_buffer_max_bytes: "EG_WS_BUFFER_MAX_BYTES" default "67108864",

        /// Bytes one websocket may have waiting to be written before messages for it are dropped
        /// (and counted); other clients are never affected.
        ws_client_queue_max_bytes: "EG_WS_CLIENT_QUEUE_MAX_BYTES" default "268435456",

        /// `Access-Control-Allow-Origin` on every response; also the origin a request from another
        /// host may come from (`*`: any). Empty: no header, and foreign origins are refused
        /// (KG_ALLOW_ORIGIN is read when this is unset).
        allow_origin: "EG_ALLOW_ORIGIN",

        /// `Access-Control-Allow-Credentials` on every response; empty: none (KG_ALLOW_CREDENTIALS
        /// is read when this is unset).
        allow_credentials: "EG_ALLOW_CREDENTIALS",

        /// `Access-Control-Allow-Methods` on every response; empty: none (KG_ALLOW_METHODS is read
        /// when this is unset).
        allow_methods: "EG_ALLOW_METHODS",

        /// `Access-Control-Allow-Headers` on every response; empty: none (KG_ALLOW_HEADERS is read
        /// when this is unset).
        allow_headers: "EG_ALLOW_HEADERS",

        /// `Access-Control-Expose-Headers` on every response; empty: none (KG_EXPOSE_HEADERS is
        /// read when this is unset).
        expose_headers: "EG_EXPOSE_HEADERS",

        /// `Access-Control-Max-Age` on every response; empty: none (KG_MAX_AGE is read when this is
        /// unset).
        max_age: "EG_MAX_AGE",

        /// Port remote kernel launchers send their connection info to (0: any free port).
        response_port: "EG_RESPONSE_PORT" default "8877",

        /// Further ports tried (port+1, port+2, …) when the response port is taken.
        response_port_retries: "EG_RESPONSE_PORT_RETRIES" default "10",

        /// IPv4 address the response listener binds and advertises to launchers; unset: the first
        /// local non-loopback address not in EG_PROHIBITED_LOCAL_IPS.
        response_ip: "EG_RESPONSE_IP",

        /// Bind the response listener on all interfaces (the advertised address is unchanged).
        response_addr_any: "EG_RESPONSE_ADDR_ANY" default "False",

        /// Comma list of local addresses never advertised as the response address: regular
        /// expressions matched at the start (e.g. `172.17.,10.0.0.5`).
        prohibited_local_ips: "EG_PROHIBITED_LOCAL_IPS",

        /// Seconds (fractions allowed) a comm-port request to a remote launcher may take to connect
        /// and to send. Upstream's default 0.005 suits one machine; across a cluster network raise
        /// it.
        socket_timeout: "EG_SOCKET_TIMEOUT" default "0.005",

        /// Signal remote kernels are interrupted with when their kernelspec's env sets no
        /// EG_ALTERNATE_SIGINT (e.g. SIGUSR2); unset: SIGINT.
        alternate_sigint: "EG_ALTERNATE_SIGINT",

        /// PEM certificate (chain) for HTTPS; needs EG_KEYFILE. Unset: plain HTTP (KG_CERTFILE is
        /// read when this is unset).
        certfile: "EG_CERTFILE",

        /// PEM private key of EG_CERTFILE (KG_KEYFILE is read when this is unset).
        keyfile: "EG_KEYFILE",

        /// PEM CA certificate(s): with HTTPS, clients must present a certificate one of them signed
        /// (KG_CLIENT_CA is read when this is unset).
        client_ca: "EG_CLIENT_CA",

        /// TLS versions offered, as a Python `ssl` protocol number: 5 (PROTOCOL_TLSv1_2): TLS 1.2
        /// only; 2 (PROTOCOL_TLS) or 17 (PROTOCOL_TLS_SERVER): TLS 1.2 and 1.3. Unset: TLS 1.2 and
        /// 1.3 (upstream: 1.2 only). TLS 1.0 and 1.1 are refused (KG_SSL_VERSION is read when this
        /// is unset).
        ssl_version: "EG_SSL_VERSION",

        /// Host name (or IP address) every API request's TLS client certificate must be valid for
        /// (its subjectAltName); otherwise 403. Needs EG_CLIENT_CA.
        authorized_origin: "EG_AUTHORIZED_ORIGIN",

        /// Behind a proxy: the client address the logs name is the one `X-Real-Ip`, else the last
        /// entry of `X-Forwarded-For`, gives (KG_TRUST_XHEADERS is read when this is unset; default
        /// False).
        trust_xheaders: "EG_TRUST_XHEADERS",

        #[command(flatten)]
        pub kube: kube::KubeArgs,
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Starts and ends with `/`.
    pub base_url: String,
    /// `None`: no token check.
    pub auth_token: Option<Secret>,
    /// `None`: every kernelspec is listed.
    pub allowed_kernels: Option<Vec<String>>,
    pub default_kernel_name: String,
    /// Split on commas exactly as upstream (no trimming).
    pub authorized_users: Vec<String>,
    pub unauthorized_users: Vec<String>,
    pub log_level: LevelFilter,
    /// `None` when disabled.
    pub admin_addr: Option<SocketAddr>,
    pub rescan_interval: Duration,
    pub shutdown_grace: Duration,
    /// Where kernelspecs are looked for, in priority order (first hit per name wins).
    pub kernel_dirs: Vec<PathBuf>,
    pub list_kernels: bool,
    pub kernels: KernelSettings,
    pub ws_ping_interval: Duration,
    /// Where connection files of local kernels are written.
    pub runtime_dir: PathBuf,
    /// The CORS headers and the origin check's allowed origin.
    pub cors: Cors,
    /// `Some`: the API is served over HTTPS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `Some`: every API request's client certificate must be valid for this name.
    pub authorized_origin: Option<rustls::pki_types::ServerName<'static>>,
    /// The client address logged comes from the proxy headers.
    pub trust_xheaders: bool,
    /// The response listener of remote kernel launchers.
    pub response: ResponseSettings,
    /// Requests to remote launchers' comm ports.
    pub comm: CommSettings,
    /// Kernel pods.
    pub kube: kube::KubeSettings,
}

pub use eg_common::config::{Checker, ConfigError, ConfigErrors, Secret, Setting};
use eg_common::config::{
    parse_admin_addr, parse_bool, parse_log_level, parse_seconds, parse_trimmed, parse_whole,
};

/// Reads a variable of the process environment (for the `KG_*` fallbacks and the Jupyter path).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Validates every field against the process environment; on failure lists all invalid
    /// variables.
    pub fn from_args(args: Args) -> Result<Self, ConfigErrors> {
        Self::from_args_env(args, &|k| std::env::var(k).ok())
    }

    /// As [`Config::from_args`], with the environment given (for tests).
    pub fn from_args_env(args: Args, env: EnvLookup<'_>) -> Result<Self, ConfigErrors> {
        let mut c = Checker::default();
        let ip = c.read(&args.ip, |raw| {
            parse_trimmed::<IpAddr>(raw, "an IP address")
        });
        let port = c.read(&args.port, parse_port);
        let (response, comm) = check_remote(&mut c, &args);
        let kube = kube::check_kube(&mut c, &args.kube);
        let base = Setting::or_env(args.base_url, "KG_BASE_URL", env)
            .unwrap_or_else(|| Setting::new("EG_BASE_URL", "/"));
        let base_url = c.read(&base, parse_base_url);
        // Settings with a fallback variable (a KG_ twin, an older name) that are taken as given.
        let fallback = |setting: Option<Setting>, var: &'static str| {
            Setting::or_env(setting, var, env).map(|s| s.raw)
        };
        let token = fallback(args.auth_token, "KG_AUTH_TOKEN")
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        let allowed_kernels = c
            .read_set(args.allowed_kernels.as_ref(), parse_allowed)
            .flatten()
            .flatten();
        let log_level = c.read(&args.log_level, parse_log_level);
        let admin_addr = c.read(&args.admin_addr, parse_admin_addr).flatten();
        let positive_seconds = |raw: &str| parse_seconds(raw, false);
        let seconds = |raw: &str| parse_seconds(raw, true);
        let rescan_interval = c.read(&args.rescan_interval, positive_seconds);
        let shutdown_grace = c.read(&args.shutdown_grace, seconds);
        let list_kernels = c.read(&args.list_kernels, parse_bool);
        let max_kernels = c
            .read_set(args.max_kernels.as_ref(), parse_count)
            .flatten()
            .flatten();
        let max_per_user = c.read(&args.max_kernels_per_user, parse_count).flatten();
        let client_envs =
            ClientEnvs::parse(&fallback(args.client_envs, "EG_ENV_WHITELIST").unwrap_or_default());
        let inherited_envs: Vec<String> = fallback(args.inherited_envs, "EG_ENV_PROCESS_WHITELIST")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        let launch_timeout = c.read(&args.kernel_launch_timeout, parse_fractional_seconds);
        // Blank is the default, 60 s.
        let kernel_info_timeout = c.read(&args.kernel_info_timeout, |raw| {
            parse_fractional_seconds(if raw.trim().is_empty() { "60" } else { raw })
        });
        let min_port_range_size = c.read(&args.min_port_range_size, parse_whole::<u32>);
        let port_range = c.read(&args.port_range, |raw| {
            PortRange::parse(raw, min_port_range_size.unwrap_or(1000))
        });
        let impersonation = c.read(&args.impersonation_enabled, parse_bool);
        let cull_idle_timeout = c.read(&args.cull_idle_timeout, seconds);
        // Upstream replaces a non-positive interval with 300 s.
        let cull_interval = c
            .read(&args.cull_interval, |raw| {
                parse_trimmed::<i64>(raw, "a whole number of seconds")
            })
            .map(|s| Duration::from_secs(if s <= 0 { 300 } else { s as u64 }));
        let cull_connected = c.read(&args.cull_connected, parse_bool);
        let trust_xheaders = Setting::or_env(args.trust_xheaders, "KG_TRUST_XHEADERS", env)
            .and_then(|s| c.read(&s, parse_bool))
            .unwrap_or(false);
        let ws_ping_interval = c.read(&args.ws_ping_interval, seconds);
        let buffer_messages = c.read(&args.ws_buffer_max_messages, parse_whole::<usize>);
        let buffer_bytes = c.read(&args.ws_buffer_max_bytes, parse_whole::<usize>);
        let client_queue = c.read(&args.ws_client_queue_max_bytes, parse_whole::<usize>);
        // Each CORS setting falls back to its KG_ twin; all default to empty.
        let or_kg = |setting, kg| fallback(setting, kg).unwrap_or_default();
        let cors_settings = CorsSettings {
            allow_origin: or_kg(args.allow_origin, "KG_ALLOW_ORIGIN"),
            allow_credentials: or_kg(args.allow_credentials, "KG_ALLOW_CREDENTIALS"),
            allow_methods: or_kg(args.allow_methods, "KG_ALLOW_METHODS"),
            allow_headers: or_kg(args.allow_headers, "KG_ALLOW_HEADERS"),
            expose_headers: or_kg(args.expose_headers, "KG_EXPOSE_HEADERS"),
            max_age: or_kg(args.max_age, "KG_MAX_AGE"),
        };
        let cors = match Cors::from_settings(&cors_settings) {
            Ok(cors) => Some(cors),
            Err(errors) => {
                for (var, raw, problem) in errors {
                    c.check::<()>(var, &raw, Err(problem));
                }
                None
            }
        };
        let (certfile, keyfile, client_ca) = (
            fallback(args.certfile, "KG_CERTFILE"),
            fallback(args.keyfile, "KG_KEYFILE"),
            fallback(args.client_ca, "KG_CLIENT_CA"),
        );
        let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
        let client_certs = set(&certfile) && set(&keyfile) && set(&client_ca);
        let tls = check_tls(
            &mut c,
            certfile,
            keyfile,
            client_ca,
            fallback(args.ssl_version, "KG_SSL_VERSION"),
        );
        // Upstream declares no KG_ twin (and never reads the variable: only its command-line
        // option works).
        let authorized_origin = args.authorized_origin.and_then(|s| {
            c.check(
                "EG_AUTHORIZED_ORIGIN",
                &s.raw,
                parse_authorized_origin(&s.raw, client_certs),
            )
            .flatten()
        });
        if !c.0.is_empty() {
            return Err(ConfigErrors(c.0));
        }
        let (Some(ip), Some(port), Some(base_url), Some(log_level)) =
            (ip, port, base_url, log_level)
        else {
            unreachable!("every failed check recorded an error");
        };
        let authorized_users: Vec<String> = args
            .authorized_users
            .map(|a| a.raw.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let unauthorized_users: Vec<String> = args
            .unauthorized_users
            .raw
            .split(',')
            .map(str::to_owned)
            .collect();
        let kernels = KernelSettings {
            default_kernel_name: args.default_kernel_name.raw.clone(),
            client_envs,
            inherited_envs,
            authorized_users: authorized_users.clone(),
            unauthorized_users: unauthorized_users.clone(),
            max_kernels,
            max_kernels_per_user: max_per_user,
            launch_timeout: launch_timeout.unwrap_or_default(),
            port_range: port_range.unwrap_or(PortRange::ANY),
            min_port_range_size: min_port_range_size.unwrap_or(1000),
            impersonation: impersonation.unwrap_or(false),
            cull_idle_timeout: cull_idle_timeout.unwrap_or_default(),
            cull_interval: cull_interval.unwrap_or(Duration::from_secs(60)),
            cull_connected: cull_connected.unwrap_or(false),
            restart_limit: 5,
            comm,
            shutdown_wait: Duration::from_secs(5),
            bridge: Limits {
                client_queue_bytes: client_queue.unwrap_or(256 << 20),
                offline_messages: buffer_messages.unwrap_or(10_000),
                offline_bytes: buffer_bytes.unwrap_or(64 << 20),
                kernel_info_timeout: kernel_info_timeout.unwrap_or(Duration::from_secs(60)),
            },
        };
        let runtime_dir = env("JUPYTER_RUNTIME_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("jupyter-gateway-runtime"));
        Ok(Self {
            listen: SocketAddr::new(ip, port),
            base_url,
            auth_token: token,
            allowed_kernels,
            default_kernel_name: args.default_kernel_name.raw,
            authorized_users,
            unauthorized_users,
            log_level,
            admin_addr,
            rescan_interval: rescan_interval.unwrap_or_default(),
            shutdown_grace: shutdown_grace.unwrap_or_default(),
            kernel_dirs: kernel_dirs(env),
            list_kernels: list_kernels.unwrap_or(true),
            kernels,
            ws_ping_interval: ws_ping_interval.unwrap_or_default(),
            runtime_dir,
            cors: cors.unwrap_or_default(),
            tls,
            authorized_origin,
            trust_xheaders,
            response,
            comm,
            kube,
        })
    }
}

/// The `kernels` directories Jupyter searches, in its order: each `JUPYTER_PATH` entry, the user
/// data dir (`JUPYTER_DATA_DIR`, else `$XDG_DATA_HOME/jupyter`, else `~/.local/share/jupyter`), then
/// `/usr/local/share/jupyter` and `/usr/share/jupyter`.
pub fn kernel_dirs(env: EnvLookup<'_>) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(path) = env("JUPYTER_PATH") {
        roots.extend(
            path.split(':')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        );
    }
    let data_dir = env("JUPYTER_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env("XDG_DATA_HOME")
                .filter(|d| !d.is_empty())
                .map(|d| PathBuf::from(d).join("jupyter"))
        })
        .or_else(|| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share/jupyter"))
        });
    roots.extend(data_dir);
    roots.push(PathBuf::from("/usr/local/share/jupyter"));
    roots.push(PathBuf::from("/usr/share/jupyter"));
    let mut dirs: Vec<PathBuf> = Vec::new();
    for root in roots {
        let dir = root.join("kernels");
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// `url_path_join` semantics: always starts and ends with one `/`.
fn parse_base_url(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim().trim_matches('/');
    if trimmed.contains(['?', '#', ' ']) || trimmed.contains("//") {
        return Err("expected a URL path such as /gateway".to_owned());
    }
    if trimmed.is_empty() {
        Ok("/".to_owned())
    } else {
        Ok(format!("/{trimmed}/"))
    }
}

/// `null`/empty: no filter; `[..]`: a JSON array of names; otherwise a comma list (quotes
/// around the names are dropped, as upstream's entrypoint does). An empty list is no filter.
fn parse_allowed(raw: &str) -> Result<Option<Vec<String>>, String> {
    let raw = raw.trim();
    if raw.is_empty() || raw == "null" {
        return Ok(None);
    }
    let names: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str::<Vec<String>>(raw)
            .map_err(|e| format!("not a JSON array of names: {e}"))?
    } else {
        raw.split(',')
            .map(|n| n.trim().trim_matches(['"', '\'']).trim().to_owned())
            .collect()
    };
    let names: Vec<String> = names
        .into_iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    Ok((!names.is_empty()).then_some(names))
}

fn parse_port(raw: &str) -> Result<u16, String> {
    parse_trimmed(raw, "a port number (0-65535)")
}

/// A limit: a whole number, or a negative one for none.
fn parse_count(raw: &str) -> Result<Option<usize>, String> {
    match raw.trim().parse::<i64>() {
        Ok(n) if n < 0 => Ok(None),
        Ok(n) => Ok(Some(n as usize)),
        Err(_) => Err("expected a whole number (negative: no limit)".to_owned()),
    }
}

fn parse_fractional_seconds(raw: &str) -> Result<Duration, String> {
    match raw.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err("expected a positive number of seconds".to_owned()),
    }
}

#[cfg(test)]
mod tests;
