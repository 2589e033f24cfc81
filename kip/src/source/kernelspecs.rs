//! KernelSpecsFetcher: the images named in the gateway's kernelspecs.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use eg_common::kernelspec::{WATCH_HEADER, images_in_listing};
use reqwest::{
    StatusCode, Url,
    header::{AUTHORIZATION, ETAG, HeaderValue, IF_NONE_MATCH},
};
use tracing::{info, warn};

use super::{FetchError, Fetched, ImageSource};
use crate::{config::Secret, plan::Candidate};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads `GET {gateway}/api/kernelspecs`, conditionally on the last ETag. When the gateway
/// advertises watches ([`WATCH_HEADER`]) and `watch_wait` is set, the request carries
/// `?wait=SECONDS` and is held by the gateway until the listing changes.
pub struct KernelSpecsSource {
    client: reqwest::Client,
    url: Url,
    auth: Option<HeaderValue>,
    etag: Mutex<Option<HeaderValue>>,
    timeout: Duration,
    watch_wait: Option<Duration>,
    gateway_watches: AtomicBool,
}

impl KernelSpecsSource {
    pub fn new(
        gateway: &Url,
        token: Option<Secret>,
        validate_cert: bool,
        timeout: Duration,
        watch_wait: Option<Duration>,
    ) -> Result<Self, FetchError> {
        let url = kernelspecs_url(gateway);
        let request_error = |message: String| FetchError::Request {
            url: shown(&url),
            message,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tls_danger_accept_invalid_certs(!validate_cert)
            .user_agent(concat!("kip/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| request_error(e.to_string()))?;
        // The token travels only in this header, marked sensitive so it is never printed.
        let auth = token
            .map(|t| {
                let mut v =
                    HeaderValue::try_from(format!("token {}", t.expose())).map_err(|_| {
                        request_error("KIP_AUTH_TOKEN is not a valid header value".into())
                    })?;
                v.set_sensitive(true);
                Ok(v)
            })
            .transpose()?;
        Ok(Self {
            client,
            url,
            auth,
            etag: Mutex::new(None),
            timeout,
            watch_wait,
            gateway_watches: AtomicBool::new(false),
        })
    }
}

/// `{gateway}/api/kernelspecs`, keeping any base path of the gateway URL.
/// The URL as logs and errors show it: without any `user:password@`.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

fn kernelspecs_url(gateway: &Url) -> Url {
    let mut url = gateway.clone();
    url.set_query(None);
    url.set_fragment(None);
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}/api/kernelspecs"));
    url
}

#[async_trait]
impl ImageSource for KernelSpecsSource {
    fn name(&self) -> &'static str {
        "KernelSpecsFetcher"
    }

    fn watches(&self) -> bool {
        self.watch_wait.is_some() && self.gateway_watches.load(Ordering::Relaxed)
    }

    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let url = shown(&self.url);
        let etag = self.etag.lock().expect("etag lock").clone();
        // Hold a watch only with an ETag to compare against, and only on a gateway that said so.
        let wait = self.watch_wait.filter(|_| etag.is_some() && self.watches());
        let mut target = self.url.clone();
        if let Some(wait) = wait {
            target.set_query(Some(&format!("wait={}", wait.as_secs())));
        }
        let mut request = self
            .client
            .get(target)
            .timeout(self.timeout + wait.unwrap_or_default());
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response = request.send().await.map_err(|e| FetchError::Request {
            url: url.clone(),
            message: error_chain(&e.without_url()),
        })?;
        let status = response.status();
        let advertises = response.headers().contains_key(WATCH_HEADER);
        if advertises != self.gateway_watches.swap(advertises, Ordering::Relaxed) {
            info!(url, watch = advertises, "gateway watch support changed");
        }
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url,
                status: status.as_u16(),
            });
        }
        let new_etag = response.headers().get(ETAG).cloned();
        let body = response.bytes().await.map_err(|e| FetchError::Request {
            url: url.clone(),
            message: error_chain(&e.without_url()),
        })?;
        let found = images_in_listing(&body).map_err(|error| FetchError::Listing {
            url: url.clone(),
            error,
        })?;
        for e in &found.errors {
            warn!(url, kernelspec = %e.kernelspec, field = %e.field, reason = %e.reason, "skipping malformed kernelspec field");
        }
        // Remember the ETag only once the body was read, so a bad body is fetched again.
        *self.etag.lock().expect("etag lock") = new_etag;
        Ok(Fetched::Images(
            found
                .images
                .into_iter()
                .map(|m| {
                    Candidate::new(
                        m.image,
                        format!("kernelspec {:?}: {}", m.kernelspec, m.field),
                    )
                })
                .collect(),
        ))
    }
}

/// The error and its causes on one line (reqwest's own Display stops at the outermost).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_url_has_no_credentials() {
        let url = kernelspecs_url(&Url::parse("https://kip:s3cret@eg.example/gw/").unwrap());
        assert_eq!(shown(&url), "https://eg.example/gw/api/kernelspecs");
    }

    #[test]
    fn url_keeps_base_path() {
        let cases = [
            ("http://eg:8888", "http://eg:8888/api/kernelspecs"),
            ("http://eg:8888/", "http://eg:8888/api/kernelspecs"),
            ("https://h/gateway/", "https://h/gateway/api/kernelspecs"),
            ("http://h/a/b?x=1", "http://h/a/b/api/kernelspecs"),
        ];
        for (gateway, want) in cases {
            assert_eq!(
                kernelspecs_url(&Url::parse(gateway).unwrap()).as_str(),
                want
            );
        }
    }
}
