//! Pulls through containerd's Transfer service (containerd 1.7+ and 2.x): the daemon resolves,
//! fetches and unpacks the image itself, as `ctr images pull` does on 2.x, so the blobs never
//! pass through the agent.
//!
//! One `Transfer` call carries the source (`OCIRegistry`: the reference and how to reach the
//! registry) and the destination (`ImageStore`: the image record's name and labels, the node's
//! platform, and an unpack into the configured snapshotter). When the agent's keyring holds a
//! credential for the image, the call also names an auth stream: a `Streaming.Stream` opened
//! beforehand (a `StreamInit` first, acknowledged by the daemon), on which containerd sends an
//! `AuthRequest` whenever a registry challenges it and the agent answers with an `AuthResponse`.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use containerd_client::{
    services::v1::{
        PluginsRequest, StreamInit, TransferRequest, introspection_client::IntrospectionClient,
        streaming_client::StreamingClient, transfer_client::TransferClient,
    },
    types::{
        Platform,
        transfer::{
            AuthRequest, AuthResponse, AuthType, ImageStore, OciRegistry, RegistryResolver,
            UnpackConfiguration,
        },
    },
};
use eg_common::ImageRef;
use prost::{Message, Name};
use prost_types::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tracing::{debug, info, warn};

use super::{CRI_IMAGE_LABEL, ContainerdRuntime, Ctx, grpc_error};
use crate::{
    credentials::Credential,
    ports::{ErrorKind, PullOutcome, RuntimeError},
    registry::node_platform,
};

/// The plugin type of containerd's transfer implementations (`local` on 1.7+/2.x).
pub(crate) const TRANSFER_PLUGIN_TYPE: &str = "io.containerd.transfer.v1";

/// Packs a message as containerd expects it: the type URL is the message's full protobuf name
/// (what Go's typeurl writes and what containerd's transfer plugins are registered under).
pub(crate) fn to_any<T: Message + Name>(msg: &T) -> Any {
    Any {
        type_url: T::full_name(),
        value: msg.encode_to_vec(),
    }
}

/// Unpacks an `Any` of type `T`, accepting the bare full name or a URL ending in it.
pub(crate) fn from_any<T: Message + Name + Default>(any: &Any) -> Option<T> {
    let name = T::full_name();
    let url = any.type_url.as_str();
    let matches = url == name || url.rsplit_once('/').is_some_and(|(_, n)| n == name);
    matches
        .then(|| T::decode(any.value.as_slice()).ok())
        .flatten()
}

/// Whether the daemon runs a transfer plugin that initialised (Introspection `Plugins`).
/// containerd 1.6 has none; the filter is checked again here, as the answer is small.
pub(crate) async fn offered(ctx: &Ctx) -> Result<bool, RuntimeError> {
    let reply = IntrospectionClient::new(ctx.channel.clone())
        .plugins(ctx.request(PluginsRequest {
            filters: vec![format!("type=={TRANSFER_PLUGIN_TYPE:?}")],
        }))
        .await;
    let plugins = match reply {
        Ok(r) => r.into_inner().plugins,
        // A daemon (or proxy) without introspection offers no transfer either.
        Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(false),
        Err(s) => return Err(grpc_error("introspection plugins", s)),
    };
    Ok(plugins
        .iter()
        .any(|p| p.r#type == TRANSFER_PLUGIN_TYPE && p.init_err.is_none()))
}

/// The node's platform as containerd's protobuf type.
fn platform() -> Platform {
    let (os, arch) = node_platform();
    Platform {
        os: os.to_owned(),
        architecture: arch.to_owned(),
        variant: if arch == "arm64" { "v8" } else { "" }.to_owned(),
        os_version: String::new(),
    }
}

/// The `Transfer` request for pulling `image` into the namespace's image store, unpacked for
/// `snapshotter`; `host_dir` is the node's hosts.toml root, which the daemon reads.
pub(crate) fn pull_request(
    image: &ImageRef,
    snapshotter: &str,
    plain_http: bool,
    host_dir: Option<&str>,
    auth_stream: Option<&str>,
) -> TransferRequest {
    let name = image.to_string();
    let source = OciRegistry {
        reference: name.clone(),
        resolver: Some(RegistryResolver {
            auth_stream: auth_stream.unwrap_or_default().to_owned(),
            default_scheme: if plain_http { "http" } else { "" }.to_owned(),
            host_dir: host_dir.unwrap_or_default().to_owned(),
            ..Default::default()
        }),
    };
    let destination = ImageStore {
        name,
        labels: HashMap::from([(CRI_IMAGE_LABEL.to_owned(), "managed".to_owned())]),
        platforms: vec![platform()],
        unpacks: vec![UnpackConfiguration {
            platform: Some(platform()),
            snapshotter: snapshotter.to_owned(),
        }],
        ..Default::default()
    };
    TransferRequest {
        source: Some(to_any(&source)),
        destination: Some(to_any(&destination)),
        options: None,
    }
}

/// A stream ID no other pull of this or another agent uses.
fn stream_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "kip-creds-{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether the host containerd asks credentials for is the image's registry (Docker Hub's API
/// host included); other hosts (mirrors from hosts.toml) get none.
fn is_image_host(image: &ImageRef, host: &str) -> bool {
    let registry = image.registry();
    host.eq_ignore_ascii_case(registry)
        || (matches!(registry, "docker.io" | "index.docker.io")
            && host.eq_ignore_ascii_case("registry-1.docker.io"))
}

/// The answer to one `AuthRequest`: the credential for the image's registry, none otherwise.
pub(crate) fn auth_response(
    image: &ImageRef,
    credential: &Credential,
    request: &AuthRequest,
) -> AuthResponse {
    if is_image_host(image, &request.host) {
        AuthResponse {
            auth_type: AuthType::Credentials as i32,
            username: credential.username.clone(),
            secret: credential.password.clone(),
            expire_at: None,
        }
    } else {
        AuthResponse {
            auth_type: AuthType::None as i32,
            ..Default::default()
        }
    }
}

/// An auth stream registered with the daemon: the sender for answers and the daemon's requests.
struct AuthStream {
    id: String,
    answers: mpsc::Sender<Any>,
    requests: Streaming<Any>,
}

impl AuthStream {
    /// Opens a stream and waits for the daemon to acknowledge its registration.
    async fn open(ctx: &Ctx) -> Result<Self, RuntimeError> {
        let id = stream_id();
        let (answers, rx) = mpsc::channel(4);
        // Queued before the call: the daemon answers (and sends headers) only after it.
        answers
            .send(to_any(&StreamInit { id: id.clone() }))
            .await
            .map_err(|_| RuntimeError::new(ErrorKind::Other, "auth stream closed"))?;
        let mut requests = StreamingClient::new(ctx.channel.clone())
            .stream(ctx.request(ReceiverStream::new(rx)))
            .await
            .map_err(|s| grpc_error("open auth stream", s))?
            .into_inner();
        requests
            .message()
            .await
            .map_err(|s| grpc_error("open auth stream", s))?
            .ok_or_else(|| {
                RuntimeError::new(
                    ErrorKind::Unavailable,
                    "containerd: open auth stream: closed before its acknowledgement",
                )
            })?;
        Ok(Self {
            id,
            answers,
            requests,
        })
    }

    /// Answers the daemon's credential requests until the stream ends.
    async fn serve(mut self, image: &ImageRef, credential: &Credential) {
        loop {
            let any = match self.requests.message().await {
                Ok(Some(any)) => any,
                Ok(None) => return,
                Err(s) => {
                    debug!(stream = %self.id, error = %s.message(), "auth stream ended");
                    return;
                }
            };
            let Some(request) = from_any::<AuthRequest>(&any) else {
                warn!(stream = %self.id, type_url = %any.type_url, "unexpected message on the auth stream");
                continue;
            };
            let response = auth_response(image, credential, &request);
            debug!(
                %image,
                host = %request.host,
                answered = response.auth_type == AuthType::Credentials as i32,
                "containerd asked for registry credentials"
            );
            if self.answers.send(to_any(&response)).await.is_err() {
                return;
            }
        }
    }
}

/// Pulls `image` through the Transfer service into the context's namespace, unpacked for its
/// snapshotter. With a credential, containerd gets it through an auth stream when the registry
/// challenges it. Dropping the future cancels the transfer and closes the stream.
pub(crate) async fn pull(
    ctx: &Ctx,
    image: &ImageRef,
    credential: Option<&Credential>,
    plain_http: bool,
    host_dir: Option<&str>,
) -> Result<(), RuntimeError> {
    let what = format!("transfer {image}");
    let auth = match credential {
        Some(_) => Some(AuthStream::open(ctx).await?),
        None => None,
    };
    let request = pull_request(
        image,
        &ctx.snapshotter,
        plain_http,
        host_dir,
        auth.as_ref().map(|a| a.id.as_str()),
    );
    let transfer = async {
        TransferClient::new(ctx.channel.clone())
            .transfer(ctx.request(request))
            .await
            .map(|_| ())
            .map_err(|s| grpc_error(&what, s))
    };
    match (auth, credential) {
        (Some(auth), Some(credential)) => {
            tokio::pin!(transfer);
            tokio::select! {
                result = &mut transfer => result,
                () = auth.serve(image, credential) => transfer.await,
            }
        }
        _ => transfer.await,
    }
}

impl ContainerdRuntime {
    /// Pulls through the daemon's Transfer service, then checks that the image was unpacked for
    /// our snapshotter: a daemon whose transfer `unpack_config` lacks it fetches without
    /// unpacking, and the native path then unpacks what was fetched.
    pub(super) async fn transfer_pull(
        &self,
        image: &ImageRef,
    ) -> Result<PullOutcome, RuntimeError> {
        let started = Instant::now();
        let ctx = self.ctx(None);
        self.check_room_before_transfer(&ctx, image).await?;
        pull(
            &ctx,
            image,
            self.keyring.lookup(image),
            self.registry.is_plain_http(image),
            self.config.hosts_dir.as_deref(),
        )
        .await?;
        let transfer_ms = started.elapsed().as_millis() as u64;
        match self.unpacked_config(&ctx, image).await? {
            Some(config) => {
                info!(
                    image = %image,
                    path = "transfer",
                    config = %config,
                    total_ms = transfer_ms,
                    "containerd pull done"
                );
                Ok(PullOutcome {
                    image_id: Some(config),
                    bytes: None,
                })
            }
            None => {
                warn!(
                    image = %image,
                    snapshotter = %self.config.snapshotter,
                    "containerd's Transfer service did not unpack the image for this snapshotter \
                     (not in its unpack_config); unpacking natively"
                );
                self.native_pull(image).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    #[test]
    fn anys_carry_the_full_protobuf_name() {
        let any = to_any(&OciRegistry::default());
        assert_eq!(any.type_url, "containerd.types.transfer.OCIRegistry");
        assert_eq!(
            to_any(&ImageStore::default()).type_url,
            "containerd.types.transfer.ImageStore"
        );
        assert_eq!(
            to_any(&StreamInit::default()).type_url,
            "containerd.services.streaming.v1.StreamInit"
        );
        let req = AuthRequest {
            host: "r".into(),
            ..Default::default()
        };
        for url in [
            "containerd.types.transfer.AuthRequest",
            "type.googleapis.com/containerd.types.transfer.AuthRequest",
        ] {
            let any = Any {
                type_url: url.into(),
                value: req.encode_to_vec(),
            };
            assert_eq!(from_any::<AuthRequest>(&any), Some(req.clone()), "{url}");
        }
        assert_eq!(
            from_any::<AuthRequest>(&to_any(&StreamInit::default())),
            None
        );
    }

    /// The request's source reference, and its resolver's default scheme, auth stream and hosts
    /// directory.
    fn source_of(req: &TransferRequest) -> [String; 4] {
        let source: OciRegistry = from_any(req.source.as_ref().unwrap()).unwrap();
        let resolver = source.resolver.unwrap();
        [
            source.reference,
            resolver.default_scheme,
            resolver.auth_stream,
            resolver.host_dir,
        ]
    }

    #[test]
    fn pull_request_names_image_platform_and_snapshotter() {
        let img = image("127.0.0.1:5000/test/a:1");
        let req = pull_request(&img, "native", true, None, Some("s1"));
        assert_eq!(
            source_of(&req),
            ["127.0.0.1:5000/test/a:1", "http", "s1", ""].map(String::from)
        );
        let dest: ImageStore = from_any(req.destination.as_ref().unwrap()).unwrap();
        assert_eq!(dest.name, "127.0.0.1:5000/test/a:1");
        assert_eq!(dest.labels[CRI_IMAGE_LABEL], "managed");
        assert_eq!(dest.platforms, vec![platform()]);
        assert_eq!(dest.unpacks.len(), 1);
        assert_eq!(dest.unpacks[0].snapshotter, "native");
        assert_eq!(dest.unpacks[0].platform, Some(platform()));
        assert_eq!(platform().os, "linux");

        let req = pull_request(
            &image("python:3"),
            "overlayfs",
            false,
            Some("/etc/containerd/certs.d"),
            None,
        );
        assert_eq!(
            source_of(&req),
            [
                "docker.io/library/python:3",
                "",
                "",
                "/etc/containerd/certs.d"
            ]
            .map(String::from)
        );
    }

    #[test]
    fn credentials_go_only_to_the_image_registry() {
        let cred = Credential {
            username: "u".into(),
            password: "p".into(),
            identity_token: None,
        };
        let ask = |host: &str| AuthRequest {
            host: host.into(),
            reference: String::new(),
            wwwauthenticate: vec![],
        };
        let img = image("reg.example:5000/team/a:1");
        let r = auth_response(&img, &cred, &ask("reg.example:5000"));
        assert_eq!(r.auth_type, AuthType::Credentials as i32);
        assert_eq!((r.username.as_str(), r.secret.as_str()), ("u", "p"));
        let r = auth_response(&img, &cred, &ask("mirror.example"));
        assert_eq!(r.auth_type, AuthType::None as i32);
        assert!(r.secret.is_empty());
        let hub = image("team/a:1");
        let r = auth_response(&hub, &cred, &ask("registry-1.docker.io"));
        assert_eq!(r.auth_type, AuthType::Credentials as i32);
    }

    #[test]
    fn stream_ids_differ() {
        assert_ne!(stream_id(), stream_id());
    }
}
