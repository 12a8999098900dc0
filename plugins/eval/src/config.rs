//! The eval stage's configuration (`with:`). Every value is checked while the workflow is
//! validated: a bad one is an invalid workflow (exit code 2) whose message names the field.

use dinoflow_vision::DeviceChoice;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// Configuration of the `eval` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// The weighted k-NN classifier (dinov2 `eval/knn.py`).
    #[serde(default, deserialize_with = "checked")]
    pub knn: KnnConfig,
    /// The linear probe on frozen features (dinov2 `eval/linear.py`, without augmentation).
    #[serde(default, deserialize_with = "checked")]
    pub linear: LinearConfig,
    /// Which baselines are evaluated beside the input models.
    #[serde(default)]
    pub baselines: Baselines,
    /// Images per forward pass when the features are extracted.
    #[serde(default = "default_batch_size", deserialize_with = "at_least_one")]
    pub batch_size: usize,
    /// Input side in pixels for every ViT (a multiple of each model's patch size). Default: each
    /// model's native size when it is at most 224, else 224.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "positive_side"
    )]
    pub image_size: Option<i64>,
    /// Seed of the random-init baselines, the validation split, the probe's initialisation and
    /// its data order.
    #[serde(default)]
    pub seed: u64,
    /// Where the models run: `auto` (CUDA when visible, else CPU), `cpu` or `cuda`. On CUDA the
    /// backbones run in bfloat16 and the features are converted to float32.
    #[serde(default)]
    pub device: DeviceChoice,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            knn: KnnConfig::default(),
            linear: LinearConfig::default(),
            baselines: Baselines::default(),
            batch_size: default_batch_size(),
            image_size: None,
            seed: 0,
            device: DeviceChoice::default(),
        }
    }
}

/// The weighted k-NN classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KnnConfig {
    /// Neighbour counts evaluated (each at least 1; capped at the train rows).
    #[serde(default = "default_ks")]
    pub ks: Vec<usize>,
    /// Temperature T of the vote weights softmax(similarity / T) over the max(ks) nearest.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// The k whose accuracy is reported (one of `ks`).
    #[serde(default = "default_report_k")]
    pub report_k: usize,
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self {
            ks: default_ks(),
            temperature: default_temperature(),
            report_k: default_report_k(),
        }
    }
}

/// The linear probe: every (layers, avgpool, learning rate) head is trained at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinearConfig {
    /// How many of the last blocks' cls tokens are concatenated (each at least 1; capped at the
    /// model's depth).
    #[serde(default = "default_layers")]
    pub layers: Vec<usize>,
    /// Whether the average of the last block's patch tokens is appended (each value is a variant).
    #[serde(default = "default_avgpool")]
    pub avgpool: Vec<bool>,
    /// Learning rates of the sweep, each scaled by `batch_size / 256`.
    #[serde(default = "default_learning_rates")]
    pub learning_rates: Vec<f64>,
    /// Passes over the training rows.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Rows per SGD step.
    #[serde(default = "default_linear_batch_size")]
    pub batch_size: usize,
    /// Share of the train rows held out (seeded shuffle) to choose the best head.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
}

impl Default for LinearConfig {
    fn default() -> Self {
        Self {
            layers: default_layers(),
            avgpool: default_avgpool(),
            learning_rates: default_learning_rates(),
            epochs: default_epochs(),
            batch_size: default_linear_batch_size(),
            val_fraction: default_val_fraction(),
        }
    }
}

/// The baselines evaluated beside the input models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Baselines {
    /// The images' pixels as features (values in [0, 1], flattened).
    #[serde(default = "default_true")]
    pub raw_pixels: bool,
    /// Each distinct input architecture at random initialisation (seeded by `seed`).
    #[serde(default = "default_true")]
    pub random_init: bool,
}

impl Default for Baselines {
    fn default() -> Self {
        Self {
            raw_pixels: true,
            random_init: true,
        }
    }
}

fn default_batch_size() -> usize {
    256
}
fn default_ks() -> Vec<usize> {
    vec![10, 20, 100, 200]
}
fn default_temperature() -> f64 {
    0.07
}
fn default_report_k() -> usize {
    20
}
fn default_layers() -> Vec<usize> {
    vec![1, 4]
}
fn default_avgpool() -> Vec<bool> {
    vec![false, true]
}
fn default_learning_rates() -> Vec<f64> {
    vec![1e-3, 1e-2, 1e-1, 1.0]
}
fn default_epochs() -> usize {
    20
}
fn default_linear_batch_size() -> usize {
    128
}
fn default_val_fraction() -> f64 {
    0.1
}
fn default_true() -> bool {
    true
}

/// A config block that checks its values after parsing.
pub trait Check {
    /// `Err` with a message naming the field and what to do.
    fn check(&self) -> Result<(), String>;
}

impl Check for KnnConfig {
    fn check(&self) -> Result<(), String> {
        if self.ks.is_empty() {
            return Err("`ks` is empty: list at least one neighbour count, e.g. [10, 20]".into());
        }
        if self.ks.contains(&0) {
            return Err(format!(
                "`ks` {:?} holds 0: every neighbour count must be at least 1",
                self.ks
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(format!(
                "`temperature` is {}; it must be a positive number (dinov2 uses 0.07)",
                self.temperature
            ));
        }
        if !self.ks.contains(&self.report_k) {
            return Err(format!(
                "`report_k` {} is not one of `ks` {:?}: add it to `ks` or report one of them",
                self.report_k, self.ks
            ));
        }
        Ok(())
    }
}

impl Check for LinearConfig {
    fn check(&self) -> Result<(), String> {
        if self.layers.is_empty() || self.layers.contains(&0) {
            return Err(format!(
                "`layers` is {:?}; list at least one block count, each at least 1 (e.g. [1, 4])",
                self.layers
            ));
        }
        if self.avgpool.is_empty() {
            return Err("`avgpool` is empty: list false, true or both".into());
        }
        if self.learning_rates.is_empty() {
            return Err("`learning_rates` is empty: list at least one, e.g. [0.001, 0.01]".into());
        }
        if let Some(lr) = self
            .learning_rates
            .iter()
            .find(|lr| !(lr.is_finite() && **lr > 0.0))
        {
            return Err(format!(
                "`learning_rates` holds {lr}; every learning rate must be a positive number"
            ));
        }
        if self.epochs == 0 {
            return Err("`epochs` must be at least 1".into());
        }
        if self.batch_size == 0 {
            return Err("`batch_size` must be at least 1".into());
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return Err(format!(
                "`val_fraction` is {}; it must be in (0, 1), e.g. 0.1",
                self.val_fraction
            ));
        }
        Ok(())
    }
}

impl EvalConfig {
    /// Checks every block (what deserialising does; for configs built in code).
    pub fn check(&self) -> Result<(), String> {
        self.knn.check().map_err(|e| format!("knn: {e}"))?;
        self.linear.check().map_err(|e| format!("linear: {e}"))?;
        if self.batch_size == 0 {
            return Err("`batch_size` must be at least 1".into());
        }
        if self.image_size.is_some_and(|s| s <= 0) {
            return Err("`image_size` must be a positive number of pixels".into());
        }
        Ok(())
    }
}

fn checked<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Check,
{
    let value = T::deserialize(d)?;
    value.check().map_err(serde::de::Error::custom)?;
    Ok(value)
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(n)
}

fn positive_side<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<i64>::deserialize(d)? {
        Some(s) if s <= 0 => Err(serde::de::Error::custom(format!(
            "{s} is not a positive number of pixels"
        ))),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<EvalConfig, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_dinov2_like() {
        let c = parse(serde_json::json!({})).unwrap();
        assert_eq!(c, EvalConfig::default());
        assert_eq!(c.knn.ks, vec![10, 20, 100, 200]);
        assert_eq!(c.knn.report_k, 20);
        assert!((c.knn.temperature - 0.07).abs() < 1e-12);
        assert!(c.check().is_ok());
    }

    #[test]
    fn bad_values_name_their_field() {
        for (json, needle) in [
            (serde_json::json!({"knn": {"ks": []}}), "`ks` is empty"),
            (serde_json::json!({"knn": {"ks": [10]}}), "`report_k` 20"),
            (
                serde_json::json!({"knn": {"temperature": 0.0}}),
                "`temperature` is 0",
            ),
            (
                serde_json::json!({"linear": {"val_fraction": 1.0}}),
                "`val_fraction` is 1",
            ),
            (
                serde_json::json!({"linear": {"learning_rates": [0.1, -1.0]}}),
                "`learning_rates` holds -1",
            ),
            (serde_json::json!({"linear": {"epochs": 0}}), "`epochs`"),
            (serde_json::json!({"linear": {"layers": [0]}}), "`layers`"),
            (serde_json::json!({"batch_size": 0}), "at least 1"),
            (serde_json::json!({"image_size": -3}), "-3"),
            (serde_json::json!({"knn": {"k": 3}}), "unknown field `k`"),
        ] {
            let err = parse(json.clone()).expect_err(&json.to_string());
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
