//! StaticListFetcher: the images in `KIP_IMAGES`.

use async_trait::async_trait;

use super::{FetchError, Fetched, ImageSource};
use crate::plan::Candidate;

/// A fixed list, validated at start.
pub struct StaticListSource {
    images: Vec<String>,
}

impl StaticListSource {
    pub fn new(images: Vec<String>) -> Self {
        Self { images }
    }
}

#[async_trait]
impl ImageSource for StaticListSource {
    fn name(&self) -> &'static str {
        "StaticListFetcher"
    }

    async fn fetch(&self) -> Result<Fetched, FetchError> {
        Ok(Fetched::Images(
            self.images
                .iter()
                .map(|i| Candidate::new(i.clone(), "KIP_IMAGES"))
                .collect(),
        ))
    }
}
