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
    tls::{self, TlsFiles},
};

use self::{https::check_tls, remote::check_remote};

/// Command line and environment of the `gateway` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Enterprise-Gateway-compatible kernel gateway: kernelspecs, kernels, kernel pods",
    long_about = "Serves Enterprise Gateway's REST and websocket API: the kernelspecs found in the \
Jupyter data path (with a watch: GET /api/kernelspecs?wait=SECONDS with If-None-Match is held until \
the listing changes), /api/kernels and /api/sessions, and each kernel's websocket \
(/api/kernels/{id}/channels). Local kernelspecs run as local processes; KubernetesProcessProxy \
kernelspecs run as pods through the Kubernetes API (in-cluster service account or KUBECONFIG).\n\n\
Every option can also be set through the environment variable shown beside it; a flag wins over \
its variable."
)]
pub struct Args {
    /// IP address to listen on.
    #[arg(long, env = "EG_IP", default_value = "0.0.0.0")]
    pub ip: String,

    /// Port to listen on.
    #[arg(long, env = "EG_PORT", default_value = "8888")]
    pub port: String,

    /// Base path every route is served under (KG_BASE_URL is read when this is unset).
    #[arg(long, env = "EG_BASE_URL")]
    pub base_url: Option<String>,

    /// Token clients must present (`Authorization: token …` or `?token=`); empty: no check
    /// (KG_AUTH_TOKEN is read when this is unset).
    #[arg(long, env = "EG_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,

    /// Kernelspec names the listing shows: a JSON array or a comma list; `null` or empty: all.
    #[arg(long, env = "EG_ALLOWED_KERNELS")]
    pub allowed_kernels: Option<String>,

    /// The `default` of the kernelspec listing.
    #[arg(long, env = "EG_DEFAULT_KERNEL_NAME", default_value = "python_docker")]
    pub default_kernel_name: String,

    /// Comma list of users `?user=` may name (unset: no global list); a spec's own
    /// `authorized_users` takes precedence.
    #[arg(long, env = "EG_AUTHORIZED_USERS")]
    pub authorized_users: Option<String>,

    /// Comma list of users `?user=` may never name.
    #[arg(long, env = "EG_UNAUTHORIZED_USERS", default_value = "root")]
    pub unauthorized_users: String,

    /// DEBUG, INFO, WARNING, ERROR, CRITICAL (any case) or Python's numbers (10…50). RUST_LOG,
    /// when set, takes precedence.
    #[arg(long, env = "EG_LOG_LEVEL", default_value = "INFO")]
    pub log_level: String,

    /// Address of the admin endpoint (/livez, /readyz, /metrics); `off` disables it.
    #[arg(long, env = "EG_ADMIN_ADDR", default_value = "0.0.0.0:9091")]
    pub admin_addr: String,

    /// Seconds between full rescans of the kernelspec directories (filesystem notifications are
    /// seen at once; the rescan catches what they miss).
    #[arg(long, env = "EG_KERNELSPEC_RESCAN_INTERVAL", default_value = "30")]
    pub rescan_interval: String,

    /// Seconds to finish after SIGTERM/SIGINT (every kernel is shut down first) before exiting
    /// anyway.
    #[arg(long, env = "EG_SHUTDOWN_GRACE", default_value = "10")]
    pub shutdown_grace: String,

    /// Whether `GET /api/kernels` and `GET /api/sessions` answer (otherwise 403). Jupyter
    /// Server's gateway client needs it.
    #[arg(long, env = "EG_LIST_KERNELS", default_value = "True")]
    pub list_kernels: String,

    /// Most kernels running and starting at once (unset: no limit).
    #[arg(long, env = "EG_MAX_KERNELS")]
    pub max_kernels: Option<String>,

    /// Most kernels per `KERNEL_USERNAME` (-1: no limit).
    #[arg(long, env = "EG_MAX_KERNELS_PER_USER", default_value = "-1")]
    pub max_kernels_per_user: String,

    /// Comma list of request `env` names (besides every `KERNEL_*`) a client may set; `*`: all
    /// (EG_ENV_WHITELIST is read when this is unset).
    #[arg(long, env = "EG_CLIENT_ENVS")]
    pub client_envs: Option<String>,

    /// Comma list of the gateway's own variables every kernel inherits (EG_ENV_PROCESS_WHITELIST
    /// is read when this is unset).
    #[arg(long, env = "EG_INHERITED_ENVS")]
    pub inherited_envs: Option<String>,

    /// Seconds a kernel may take to start; a request's KERNEL_LAUNCH_TIMEOUT wins.
    #[arg(long, env = "EG_KERNEL_LAUNCH_TIMEOUT", default_value = "30")]
    pub kernel_launch_timeout: String,

    /// Seconds the gateway waits for a new kernel's kernel_info_reply before opening a websocket
    /// anyway.
    #[arg(long, env = "EG_KERNEL_INFO_TIMEOUT", default_value = "60")]
    pub kernel_info_timeout: String,

    /// Kernel ports, `LOWER..UPPER`; `0..0`: any free port. A spec's `port_range` wins.
    #[arg(long, env = "EG_PORT_RANGE", default_value = "0..0")]
    pub port_range: String,

    /// Smallest span a port range may have.
    #[arg(long, env = "EG_MIN_PORT_RANGE_SIZE", default_value = "1000")]
    pub min_port_range_size: String,

    /// Exported to kernels as EG_IMPERSONATION_ENABLED=True|False.
    #[arg(long, env = "EG_IMPERSONATION_ENABLED", default_value = "False")]
    pub impersonation_enabled: String,

    /// Seconds a kernel may stay idle before it is shut down; 0: never.
    #[arg(long, env = "EG_CULL_IDLE_TIMEOUT", default_value = "43200")]
    pub cull_idle_timeout: String,

    /// Seconds between culling passes.
    #[arg(long, env = "EG_CULL_INTERVAL", default_value = "60")]
    pub cull_interval: String,

    /// Whether kernels with a websocket open may be culled.
    #[arg(long, env = "EG_CULL_CONNECTED", default_value = "False")]
    pub cull_connected: String,

    /// Seconds between websocket pings; 0: none. A peer silent for three intervals (at least
    /// 30 s) is disconnected.
    #[arg(long, env = "EG_WS_PING_INTERVAL_SECS", default_value = "30")]
    pub ws_ping_interval: String,

    /// Messages kept for a disconnected session until it reconnects (0: none are kept); the
    /// oldest go first and are counted in gateway_messages_dropped_total.
    #[arg(long, env = "EG_WS_BUFFER_MAX_MESSAGES", default_value = "10000")]
    pub ws_buffer_max_messages: String,

    /// Bytes kept for a disconnected session.
    #[arg(long, env = "EG_WS_BUFFER_MAX_BYTES", default_value = "67108864")]
    pub ws_buffer_max_bytes: String,

    /// Bytes one websocket may have waiting to be written before messages for it are dropped
    /// (and counted); other clients are never affected.
    #[arg(
        long,
        env = "EG_WS_CLIENT_QUEUE_MAX_BYTES",
        default_value = "268435456"
    )]
    pub ws_client_queue_max_bytes: String,

    /// `Access-Control-Allow-Origin` on every response; also the origin a request from another
    /// host may come from (`*`: any). Empty: no header, and foreign origins are refused
    /// (KG_ALLOW_ORIGIN is read when this is unset).
    #[arg(long, env = "EG_ALLOW_ORIGIN")]
    pub allow_origin: Option<String>,

    /// `Access-Control-Allow-Credentials` on every response; empty: none (KG_ALLOW_CREDENTIALS
    /// is read when this is unset).
    #[arg(long, env = "EG_ALLOW_CREDENTIALS")]
    pub allow_credentials: Option<String>,

    /// `Access-Control-Allow-Methods` on every response; empty: none (KG_ALLOW_METHODS is read
    /// when this is unset).
    #[arg(long, env = "EG_ALLOW_METHODS")]
    pub allow_methods: Option<String>,

    /// `Access-Control-Allow-Headers` on every response; empty: none (KG_ALLOW_HEADERS is read
    /// when this is unset).
    #[arg(long, env = "EG_ALLOW_HEADERS")]
    pub allow_headers: Option<String>,

    /// `Access-Control-Expose-Headers` on every response; empty: none (KG_EXPOSE_HEADERS is read
    /// when this is unset).
    #[arg(long, env = "EG_EXPOSE_HEADERS")]
    pub expose_headers: Option<String>,

    /// `Access-Control-Max-Age` on every response; empty: none (KG_MAX_AGE is read when this is
    /// unset).
    #[arg(long, env = "EG_MAX_AGE")]
    pub max_age: Option<String>,

    /// Port remote kernel launchers send their connection info to (0: any free port).
    #[arg(long, env = "EG_RESPONSE_PORT", default_value = "8877")]
    pub response_port: String,

    /// Further ports tried (port+1, port+2, …) when the response port is taken.
    #[arg(long, env = "EG_RESPONSE_PORT_RETRIES", default_value = "10")]
    pub response_port_retries: String,

    /// IPv4 address the response listener binds and advertises to launchers; unset: the first
    /// local non-loopback address not in EG_PROHIBITED_LOCAL_IPS.
    #[arg(long, env = "EG_RESPONSE_IP")]
    pub response_ip: Option<String>,

    /// Bind the response listener on all interfaces (the advertised address is unchanged).
    #[arg(long, env = "EG_RESPONSE_ADDR_ANY", default_value = "False")]
    pub response_addr_any: String,

    /// Comma list of local addresses never advertised as the response address: regular
    /// expressions matched at the start (e.g. `172.17.,10.0.0.5`).
    #[arg(long, env = "EG_PROHIBITED_LOCAL_IPS")]
    pub prohibited_local_ips: Option<String>,

    /// Seconds (fractions allowed) a comm-port request to a remote launcher may take to connect
    /// and to send. Upstream's default 0.005 suits one machine; across a cluster network raise it.
    #[arg(long, env = "EG_SOCKET_TIMEOUT", default_value = "0.005")]
    pub socket_timeout: String,

    /// Signal remote kernels are interrupted with when their kernelspec's env sets no
    /// EG_ALTERNATE_SIGINT (e.g. SIGUSR2); unset: SIGINT.
    #[arg(long, env = "EG_ALTERNATE_SIGINT")]
    pub alternate_sigint: Option<String>,

    /// PEM certificate (chain) for HTTPS; needs EG_KEYFILE. Unset: plain HTTP (KG_CERTFILE is
    /// read when this is unset).
    #[arg(long, env = "EG_CERTFILE")]
    pub certfile: Option<String>,

    /// PEM private key of EG_CERTFILE (KG_KEYFILE is read when this is unset).
    #[arg(long, env = "EG_KEYFILE")]
    pub keyfile: Option<String>,

    /// PEM CA certificate(s): with HTTPS, clients must present a certificate one of them signed
    /// (KG_CLIENT_CA is read when this is unset).
    #[arg(long, env = "EG_CLIENT_CA")]
    pub client_ca: Option<String>,

    #[command(flatten)]
    pub kube: kube::KubeArgs,
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
    /// The response listener of remote kernel launchers.
    pub response: ResponseSettings,
    /// Requests to remote launchers' comm ports.
    pub comm: CommSettings,
    /// Kernel pods.
    pub kube: kube::KubeSettings,
}

pub use eg_common::config::{Checker, ConfigError, ConfigErrors, Secret};
use eg_common::config::{
    parse_admin_addr, parse_bool, parse_log_level, parse_seconds, parse_trimmed,
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
        let ip = c.parse("EG_IP", &args.ip, |raw| {
            parse_trimmed::<IpAddr>(raw, "an IP address")
        });
        let port = c.parse("EG_PORT", &args.port, |raw| {
            parse_trimmed::<u16>(raw, "a port number (0-65535)")
        });
        let (response, comm) = check_remote(&mut c, &args);
        let kube = kube::check_kube(&mut c, &args.kube);
        let (base_var, base_raw) = match args.base_url {
            Some(b) => ("EG_BASE_URL", b),
            None => match env("KG_BASE_URL") {
                Some(b) => ("KG_BASE_URL", b),
                None => ("EG_BASE_URL", "/".to_owned()),
            },
        };
        let base_url = c.parse(base_var, &base_raw, parse_base_url);
        let token = args
            .auth_token
            .or_else(|| env("KG_AUTH_TOKEN"))
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        let allowed = args.allowed_kernels.unwrap_or_default();
        let allowed_kernels = c
            .parse("EG_ALLOWED_KERNELS", &allowed, parse_allowed)
            .flatten();
        let log_level = c.parse("EG_LOG_LEVEL", &args.log_level, parse_log_level);
        let admin_addr = c
            .parse("EG_ADMIN_ADDR", &args.admin_addr, parse_admin_addr)
            .flatten();
        let positive_seconds = |raw: &str| parse_seconds(raw, false);
        let seconds = |raw: &str| parse_seconds(raw, true);
        let rescan = &args.rescan_interval;
        let rescan_interval = c.parse("EG_KERNELSPEC_RESCAN_INTERVAL", rescan, positive_seconds);
        let shutdown_grace = c.parse("EG_SHUTDOWN_GRACE", &args.shutdown_grace, seconds);
        let list_kernels = c.parse("EG_LIST_KERNELS", &args.list_kernels, parse_bool);
        let max_kernels = c
            .parse_set("EG_MAX_KERNELS", args.max_kernels.as_deref(), parse_count)
            .flatten()
            .flatten();
        let per_user = &args.max_kernels_per_user;
        let max_per_user = c
            .parse("EG_MAX_KERNELS_PER_USER", per_user, parse_count)
            .flatten();
        let client_envs = ClientEnvs::parse(
            &args
                .client_envs
                .or_else(|| env("EG_ENV_WHITELIST"))
                .unwrap_or_default(),
        );
        let inherited_envs: Vec<String> = args
            .inherited_envs
            .or_else(|| env("EG_ENV_PROCESS_WHITELIST"))
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        let launch = &args.kernel_launch_timeout;
        let launch_timeout = c.parse("EG_KERNEL_LAUNCH_TIMEOUT", launch, parse_fractional_seconds);
        // Blank is the default, 60 s.
        let info = &args.kernel_info_timeout;
        let kernel_info_timeout = c.parse("EG_KERNEL_INFO_TIMEOUT", info, |raw| {
            parse_fractional_seconds(if raw.trim().is_empty() { "60" } else { raw })
        });
        let min_span = &args.min_port_range_size;
        let min_port_range_size = c.parse("EG_MIN_PORT_RANGE_SIZE", min_span, |raw| {
            parse_trimmed::<u32>(raw, "a whole number")
        });
        let port_range = c.parse("EG_PORT_RANGE", &args.port_range, |raw| {
            PortRange::parse(raw, min_port_range_size.unwrap_or(1000))
        });
        let impersonation = &args.impersonation_enabled;
        let impersonation = c.parse("EG_IMPERSONATION_ENABLED", impersonation, parse_bool);
        let idle = &args.cull_idle_timeout;
        let cull_idle_timeout = c.parse("EG_CULL_IDLE_TIMEOUT", idle, seconds);
        // Upstream replaces a non-positive interval with 300 s.
        let cull_interval = c
            .parse("EG_CULL_INTERVAL", &args.cull_interval, |raw| {
                parse_trimmed::<i64>(raw, "a whole number of seconds")
            })
            .map(|s| Duration::from_secs(if s <= 0 { 300 } else { s as u64 }));
        let cull_connected = c.parse("EG_CULL_CONNECTED", &args.cull_connected, parse_bool);
        let ping = &args.ws_ping_interval;
        let ws_ping_interval = c.parse("EG_WS_PING_INTERVAL_SECS", ping, seconds);
        let size = |raw: &str| parse_trimmed::<usize>(raw, "a whole number");
        let messages = &args.ws_buffer_max_messages;
        let buffer_messages = c.parse("EG_WS_BUFFER_MAX_MESSAGES", messages, size);
        let bytes = &args.ws_buffer_max_bytes;
        let buffer_bytes = c.parse("EG_WS_BUFFER_MAX_BYTES", bytes, size);
        let queue = &args.ws_client_queue_max_bytes;
        let client_queue = c.parse("EG_WS_CLIENT_QUEUE_MAX_BYTES", queue, size);
        // Each CORS setting falls back to its KG_ twin; all default to empty.
        let or_kg = |value: Option<String>, kg: &str| value.or_else(|| env(kg)).unwrap_or_default();
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
        let tls = check_tls(
            &mut c,
            args.certfile.or_else(|| env("KG_CERTFILE")),
            args.keyfile.or_else(|| env("KG_KEYFILE")),
            args.client_ca.or_else(|| env("KG_CLIENT_CA")),
        );
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
            .map(|a| a.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let unauthorized_users: Vec<String> = args
            .unauthorized_users
            .split(',')
            .map(str::to_owned)
            .collect();
        let kernels = KernelSettings {
            default_kernel_name: args.default_kernel_name.clone(),
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
            default_kernel_name: args.default_kernel_name,
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
