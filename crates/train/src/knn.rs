//! kNN monitoring (Wu et al. 2018, "Unsupervised Feature Learning via
//! Non-Parametric Instance Discrimination"; the MoCo CIFAR-10 colab's
//! `test`): how well the encoder's features classify the test images by
//! their nearest training images, without training a classifier.

use crate::error::{Result, TrainError};
use candle_core::{Device, Tensor};
use mocca_aug::{Compose, ImageU8};
use mocca_data::{ImageView, Images, OnBadFile};
use mocca_methods::eval::{knn_evaluate, KnnConfig, KnnResult};
use mocca_methods::{Encoder, FeatureLayer, FeatureSource, Features, Method};
use std::sync::Arc;

/// The kNN protocol on (evenly spaced subsets of) a labeled train and test
/// set, for one or more feature sources of one encoder.
#[derive(Clone)]
pub struct KnnMonitor {
    /// The labeled memory set (its features are the neighbours).
    pub train: Arc<Images>,
    pub test: Arc<Images>,
    /// What to evaluate, the headline source first; all of one encoder.
    pub sources: Vec<FeatureSource>,
    /// Preprocessing of the train and of the test images (deterministic:
    /// resize / crop and the training recipe's normalisation).
    pub train_pipeline: Compose,
    pub test_pipeline: Compose,
    /// Neighbours and softmax temperature (200 and 0.1 in the references).
    pub k: usize,
    pub temperature: f64,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Evaluate on this many evenly spaced images of each set (0: all).
    pub train_limit: usize,
    pub test_limit: usize,
}

/// What one evaluation found, per source.
#[derive(Clone, Debug, PartialEq)]
pub struct KnnReport {
    pub results: Vec<KnnResult>,
    /// Training images used as neighbours.
    pub n_train: usize,
}

impl KnnMonitor {
    /// k = 200, t = 0.1, batches of 256, whole sets, one pipeline for both
    /// sets: the MoCo colab's and lightly's monitor.
    pub fn new(
        train: Arc<Images>,
        test: Arc<Images>,
        source: FeatureSource,
        pipeline: Compose,
    ) -> Self {
        Self {
            train,
            test,
            sources: vec![source],
            train_pipeline: pipeline.clone(),
            test_pipeline: pipeline,
            k: 200,
            temperature: 0.1,
            batch_size: 256,
            train_limit: 0,
            test_limit: 0,
        }
    }

    /// Evaluates `method`'s encoder (evaluation mode: nothing is updated).
    pub fn evaluate(&self, method: &dyn Method, device: &Device) -> Result<KnnReport> {
        let first = self.sources.first().ok_or_else(|| {
            TrainError::InvalidConfig("the kNN monitor has no feature source".into())
        })?;
        if let Some(other) = self.sources.iter().find(|s| s.encoder != first.encoder) {
            return Err(TrainError::InvalidConfig(format!(
                "the kNN monitor's sources must share one encoder: {first} and {other}"
            )));
        }
        let encoder = method.encoder(first.encoder)?;
        let tr_idx = spread_subset(self.train.len(), self.train_limit);
        let te_idx = spread_subset(self.test.len(), self.test_limit);
        let (tr_labels, c1) = labels_of(&self.train, &tr_idx, "training")?;
        let (te_labels, c2) = labels_of(&self.test, &te_idx, "test")?;
        let b = self.batch_size;
        let tr = embed_sources(
            encoder,
            &self.sources,
            &self.train,
            &tr_idx,
            &self.train_pipeline,
            b,
            device,
        )?;
        let te = embed_sources(
            encoder,
            &self.sources,
            &self.test,
            &te_idx,
            &self.test_pipeline,
            b,
            device,
        )?;
        let kc = KnnConfig {
            k: self.k,
            temperature: self.temperature,
            ..KnnConfig::new(c1.max(c2))
        };
        let results = tr
            .iter()
            .zip(&te)
            .map(|(tr, te)| Ok(knn_evaluate(tr, &tr_labels, te, &te_labels, &kc)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(KnnReport {
            results,
            n_train: tr_idx.len(),
        })
    }
}

/// An image of a dataset as the augmentation crate's view of it (`i`: its index, for the
/// error message).
pub fn image_u8<'a>(v: &ImageView<'a>, i: usize) -> Result<ImageU8<'a>> {
    ImageU8::new(v.pixels, v.height, v.width, v.channels)
        .map_err(|e| TrainError::BadInput(format!("image {i}: {e}")))
}

/// The images `indices` of `data` as the augmentation crate's views, handed to `f` (decoded
/// for the call when `data` streams; a file that does not decode is skipped as
/// [`OnBadFile::Skip`] says, so evaluation never stops on one).
pub fn with_images<R, E: From<TrainError>>(
    data: &Images,
    indices: &[usize],
    f: impl FnOnce(&[ImageU8<'_>]) -> std::result::Result<R, E>,
) -> std::result::Result<R, E> {
    let batch = data
        .load(indices, OnBadFile::Skip)
        .map_err(TrainError::from)?;
    let views = batch.views();
    let images = views
        .iter()
        .zip(indices)
        .map(|(v, &i)| image_u8(v, i))
        .collect::<Result<Vec<_>>>()?;
    f(&images)
}

/// `limit` evenly spaced indices of `0..len` (all when `limit` is 0 or ≥ len):
/// image folders are sorted by class, so a prefix would hold few classes.
pub fn spread_subset(len: usize, limit: usize) -> Vec<usize> {
    if limit == 0 || limit >= len {
        return (0..len).collect();
    }
    (0..limit).map(|i| i * len / limit).collect()
}

/// Labels of `indices`, and the number of classes, or why there are none.
pub fn labels_of(data: &Images, indices: &[usize], what: &str) -> Result<(Vec<u32>, usize)> {
    let all = data.labels().ok_or_else(|| {
        TrainError::InvalidConfig(format!(
            "the {what} set has no labels: kNN / linear evaluation needs them"
        ))
    })?;
    let labels: Vec<u32> = indices.iter().map(|&i| all[i]).collect();
    let classes = data
        .class_names()
        .len()
        .max(all.iter().map(|&l| l as usize + 1).max().unwrap_or(0));
    Ok((labels, classes))
}

/// Features of `indices` of `data` from `encoder` (evaluation mode), tagged
/// with `source`, computed `batch` images at a time.
pub fn embed(
    encoder: &dyn Encoder,
    source: FeatureSource,
    data: &Images,
    indices: &[usize],
    pipeline: &Compose,
    batch: usize,
    device: &Device,
) -> Result<Features> {
    let mut all = embed_sources(encoder, &[source], data, indices, pipeline, batch, device)?;
    Ok(all.remove(0))
}

/// [`embed`] for several layers of one encoder (`sources` share the encoder),
/// from one pass over the images: the head runs on the backbone features.
pub fn embed_sources(
    encoder: &dyn Encoder,
    sources: &[FeatureSource],
    data: &Images,
    indices: &[usize],
    pipeline: &Compose,
    batch: usize,
    device: &Device,
) -> Result<Vec<Features>> {
    let mut parts: Vec<Vec<Features>> = vec![Vec::new(); sources.len()];
    for chunk in indices.chunks(batch.max(1)) {
        let ids: Vec<u64> = chunk.iter().map(|&i| i as u64).collect();
        let x = with_images(data, chunk, |images| -> Result<Tensor> {
            Ok(pipeline
                .apply_batch(images, &ids, 0, 0, 0)?
                .into_tensor(device)?)
        })?;
        let h = encoder.features(&x, false)?.detach();
        let mut z = None;
        for (part, source) in parts.iter_mut().zip(sources) {
            let f = match source.layer {
                FeatureLayer::Backbone => h.clone(),
                FeatureLayer::Head => match &z {
                    Some(z) => Tensor::clone(z),
                    None => {
                        let out = encoder.project(&h, false)?.detach();
                        z = Some(out.clone());
                        out
                    }
                },
            };
            part.push(Features::new(f, *source)?);
        }
    }
    parts.iter().map(|p| Ok(Features::concat(p)?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_subset_covers_the_whole_range() {
        assert_eq!(spread_subset(10, 0), (0..10).collect::<Vec<_>>());
        assert_eq!(spread_subset(10, 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(spread_subset(3, 7), vec![0, 1, 2]);
    }
}
