//! Where the list of images comes from, behind one trait.

mod combined;
mod configmap;
mod kernelspecs;
mod static_list;

use std::sync::Arc;

use async_trait::async_trait;

pub use self::{
    combined::CombinedSource, configmap::ConfigMapSource, kernelspecs::KernelSpecsSource,
    static_list::StaticListSource,
};
use crate::{
    config::{Config, FetcherKind},
    plan::Candidate,
};

/// The result of asking a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The full current list.
    Images(Vec<Candidate>),
    /// Nothing changed since the last successful fetch.
    NotModified,
}

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: request failed: {message}")]
    Request { url: String, message: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {error}")]
    Listing {
        url: String,
        error: eg_common::kernelspec::ListingError,
    },
    #[error("ConfigMap {namespace}/{name}: {message}")]
    ConfigMap {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("every source failed: {0}")]
    AllFailed(String),
}

/// A source of image names.
#[async_trait]
pub trait ImageSource: Send + Sync {
    /// The upstream fetcher name (`KernelSpecsFetcher`, …), for logs and metrics.
    fn name(&self) -> &'static str;

    /// The current list of images, or [`Fetched::NotModified`] if it is unchanged since the last
    /// successful call.
    async fn fetch(&self) -> Result<Fetched, FetchError>;

    /// Whether [`fetch`](Self::fetch) holds until the list changes (a watch), so the caller may
    /// call it again at once instead of waiting an interval.
    fn watches(&self) -> bool {
        false
    }
}

/// Builds the configured source.
pub fn from_config(config: &Config) -> Result<Arc<dyn ImageSource>, FetchError> {
    let build = |kind: FetcherKind| -> Result<Arc<dyn ImageSource>, FetchError> {
        Ok(match kind {
            FetcherKind::KernelSpecs => Arc::new(KernelSpecsSource::new(
                &config.source.gateway_url,
                config.source.auth_token.clone(),
                config.source.validate_cert,
                config.source.fetch_timeout,
                // Only the daemon with the gateway as its one source holds watches; a combined
                // source asks every source each interval.
                (!config.once && config.source.fetcher == FetcherKind::KernelSpecs)
                    .then_some(config.source.watch_wait)
                    .flatten(),
            )?),
            FetcherKind::StaticList => {
                Arc::new(StaticListSource::new(config.source.images.clone()))
            }
            FetcherKind::ConfigMap => {
                Arc::new(ConfigMapSource::in_cluster(config.source.configmap.clone()))
            }
            FetcherKind::Combined => unreachable!("validated: Combined is never internal"),
        })
    };
    match config.source.fetcher {
        FetcherKind::Combined => Ok(Arc::new(CombinedSource::new(
            config
                .source
                .internal_fetchers
                .iter()
                .map(|k| build(*k))
                .collect::<Result<_, _>>()?,
        ))),
        kind => build(kind),
    }
}
