//! The `dedup` stage (dinov2.md §1.1): a kNN graph over the pool's copy-detection vectors (and
//! their mirrored vectors) proposes pairs; local features confirm or reject the candidates of
//! photos ([`crate::features`]), and the others are links when above the cosine threshold or
//! when their pixels align (`verify`) ([`crate::links`]); and every removed row is linked directly to the row
//! kept for it ([`crate::groups`]: components that chain distinct pictures are split). With
//! `against`, every component that reaches an evaluation image (at the stricter
//! `against_threshold`) is dropped whole. Embeddings that cannot tell images apart, and results
//! that would remove more than `max_removed` of the pool, fail instead ([`crate::safety`]).

use std::sync::Arc;

use arrow_array::builder::{Float32Builder, StringBuilder};
use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use dinoflow_engine::{
    Port, PortType, Resources, Stage, StageContext, StageError, async_trait, semver,
};
use dinoflow_vision::DeviceChoice;
use dinoflow_vision::tch::Tensor;
use futures::TryStreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::features::FeaturesConfig;
use crate::grey::{GreyImage, read_grey};
use crate::groups::{Grouping, Removal, Target, remove_copies, remove_evaluation_overlap};
use crate::links::{Candidates, LocalCounts};
use crate::rows::{Row, check_alignment, read_rows, same_rows};
use crate::safety::{check_distinct, check_share};
use crate::vectors::{Vectors, read_vectors};
use crate::verify::{Pixels, VerifyConfig, read_pixels};
use crate::{CurateError, failed};

/// Configuration of the `dedup` stage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Neighbours per image in the kNN graph (the paper: 64).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Cosine similarity above which two pool images are copies. The default, 0.93, suits the
    /// built-in `dct` descriptor on photos; the paper used 0.6 with SSCD (see the workflow
    /// reference).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Cosine similarity above which an image is linked to an evaluation image or to another pool
    /// image when looking for components that touch the evaluation set (the paper: 0.45).
    #[serde(default = "default_against_threshold")]
    pub against_threshold: f64,
    /// Which member of a component is kept.
    #[serde(default)]
    pub keep: KeepRule,
    /// Geometric verification of the pairs the descriptor cannot decide: a pair of the kNN graph
    /// above `verify.candidates` is also a copy (at both thresholds) when its pixels, aligned by a
    /// small zoom and shift, reach `verify.threshold`. With `against`, it needs `against_images`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyConfig>,
    /// Local-feature verification for photos (off by default: on held-out photos it still merges
    /// consecutive video frames and calibration shots; see docs/benchmarks.md): every pair of
    /// the kNN graph above `local_features.candidates` is confirmed or rejected by keypoints,
    /// a fitted transform and the agreement of the warped images. A confirmed pair is a copy at
    /// any descriptor score, a rejected one is not; for images too small or plain to tell, the
    /// descriptor decides. With `against`, evaluation pairs are checked when `against_images`
    /// is connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_features: Option<FeaturesConfig>,
    /// The largest share of the pool (0 to 1) that may be removed as copies: a result above it
    /// fails with an explanation and writes nothing. With 1, embeddings that cannot tell images
    /// apart are accepted too.
    #[serde(default = "default_max_removed")]
    pub max_removed: f64,
    /// Where the search runs.
    #[serde(default)]
    pub device: DeviceChoice,
}

fn default_k() -> usize {
    64
}
fn default_threshold() -> f64 {
    0.93
}
fn default_max_removed() -> f64 {
    0.5
}
fn default_against_threshold() -> f64 {
    0.45
}

/// The representative of a component of copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeepRule {
    /// The member with the most source pixels (width × height), then the largest file, then the
    /// first in input order: copies are usually degraded, the original is the largest.
    #[default]
    Largest,
    /// The first member in input order.
    First,
}

/// The schema of the `duplicates` output.
pub fn duplicates_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("representative", DataType::Utf8, false),
        Field::new("similarity", DataType::Float32, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("basis", DataType::Utf8, false),
    ]))
}

/// The `dedup` stage kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Dedup;

#[async_trait]
impl Stage for Dedup {
    type Config = DedupConfig;

    fn kind(&self) -> &'static str {
        "dedup"
    }
    fn version(&self) -> semver::Version {
        semver::Version::new(1, 2, 0)
    }
    fn description(&self) -> &'static str {
        "near-duplicate removal: kNN graph (both orientations), candidates confirmed or rejected \
         by local features (photos), else the cosine threshold or pixel alignment; every removed \
         image a direct copy of the one kept for it; components touching an evaluation set are \
         dropped"
    }
    fn inputs(&self) -> Vec<Port> {
        vec![
            Port::new("images", PortType::Dataset("images"), "the pool"),
            Port::new(
                "embeddings",
                PortType::Dataset("embeddings"),
                "the pool's vectors (embed on the same images), same row order",
            ),
            Port::optional(
                "against",
                PortType::Dataset("embeddings"),
                "vectors of an evaluation set: every component touching it is dropped",
            ),
            Port::optional(
                "against_images",
                PortType::Dataset("images"),
                "the evaluation images of `against`, same row order (needed by `verify`)",
            ),
        ]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![
            Port::new(
                "kept",
                PortType::Dataset("images"),
                "one image per component",
            ),
            Port::new(
                "duplicates",
                PortType::Dataset("duplicates"),
                "id, source, representative (kept row or evaluation image), similarity, reason, \
                 basis (descriptor, mirrored, aligned pixels, local features or component)",
            ),
        ]
    }
    fn check(&self, config: &DedupConfig) -> Result<(), String> {
        check_config(config).map_err(|e| e.to_string())
    }
    fn resources(&self, config: &DedupConfig) -> Resources {
        Resources {
            cpus: u32::MAX,
            gpus: u32::from(config.device == DeviceChoice::Cuda),
            memory_gb: 2.0,
        }
    }

    async fn run(&self, config: &DedupConfig, ctx: &StageContext) -> Result<(), StageError> {
        let device = config.device.resolve().map_err(failed)?;
        let pool = read_vectors(ctx, "embeddings", device).await?;
        let rows = read_rows(ctx).await?;
        check_alignment(&pool, &rows).map_err(failed)?;
        let against = match ctx.input("against") {
            Some(_) => Some(read_vectors(ctx, "against", device).await?),
            None => None,
        };
        if config.verify.is_none()
            && config.local_features.is_none()
            && ctx.input("against_images").is_some()
        {
            tracing::warn!(
                stage = %ctx.stage,
                "`against_images` is only read by `verify` and `local_features`, neither of which \
                 is configured: it is unused"
            );
        }
        let pixels = match &config.verify {
            Some(v) => {
                let against_ids = against.as_ref().map(|a| a.ids.clone());
                Some(read_all_pixels(ctx, v, against_ids.as_deref(), device).await?)
            }
            None => None,
        };
        let grey = match &config.local_features {
            Some(f) => {
                let against_ids = against.as_ref().map(|a| a.ids.clone());
                Some(read_all_grey(ctx, f, against_ids.as_deref()).await?)
            }
            None => None,
        };
        let cfg = config.clone();
        let cpus = ctx.cpus;
        let (decided, against_ids, rows) = tokio::task::spawn_blocking(move || {
            dinoflow_vision::tch::set_num_threads(cpus.min(i32::MAX as usize) as i32);
            let inputs = Inputs {
                pool: &pool,
                against: against.as_ref(),
                pixels: pixels.as_ref(),
                grey: grey.as_deref(),
                rows: &rows,
                cpus,
            };
            let decided = decide(&cfg, &inputs);
            (decided, against.map(|a| a.ids), rows)
        })
        .await
        .map_err(|e| failed(CurateError::Worker(e.to_string())))?;
        let Decided {
            removals,
            grouping,
            verified,
            local,
        } = decided.map_err(failed)?;
        let evaluation = removals
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    Some(Removal {
                        target: Target::Evaluation(_),
                        ..
                    })
                )
            })
            .count();
        let kept = removals.iter().filter(|r| r.is_none()).count();
        let duplicates = rows.len() - kept - evaluation;
        check_share(duplicates, rows.len(), config.max_removed).map_err(failed)?;

        let keep: Vec<bool> = removals.iter().map(Option::is_none).collect();
        write_kept(ctx, &keep).await?;
        let out = duplicates_batch(&rows, &removals, against_ids.as_deref().unwrap_or(&[]))
            .map_err(failed)?;
        let mut writer = ctx.dataset_writer("duplicates", duplicates_schema());
        if out.num_rows() > 0 {
            writer.write(&out).await?;
        }
        ctx.finish_dataset("duplicates", writer).await?;
        ctx.metric("rows", rows.len() as u64);
        ctx.metric("kept", kept as u64);
        ctx.metric("duplicates", duplicates as u64);
        ctx.metric("evaluation_overlap", evaluation as u64);
        ctx.metric("groups", grouping.groups as u64);
        ctx.metric("components", grouping.components as u64);
        ctx.metric("split_components", grouping.split_components as u64);
        if let Some((pairs, copies)) = verified {
            ctx.metric("verified_pairs", pairs as u64);
            ctx.metric("verified_copies", copies as u64);
        }
        if let Some(local) = local {
            ctx.metric("local_pairs", local.pairs as u64);
            ctx.metric("local_confirmed", local.confirmed as u64);
            ctx.metric("local_rejected", local.rejected as u64);
        }
        Ok(())
    }
}

fn check_config(c: &DedupConfig) -> Result<(), CurateError> {
    if let Some(v) = &c.verify {
        v.check()?;
    }
    if let Some(f) = &c.local_features {
        f.check()?;
    }
    if c.k == 0 {
        return Err(CurateError::Config("k must be at least 1".into()));
    }
    if !(c.max_removed > 0.0 && c.max_removed <= 1.0) {
        return Err(CurateError::Config(format!(
            "max_removed {} is a share of the pool: it must be in (0, 1]",
            c.max_removed
        )));
    }
    for (name, v) in [
        ("threshold", c.threshold),
        ("against_threshold", c.against_threshold),
    ] {
        if !(-1.0..=1.0).contains(&v) {
            return Err(CurateError::Config(format!(
                "{name} {v} is a cosine similarity: it must be in [-1, 1]"
            )));
        }
    }
    Ok(())
}

/// The grey pixels `verify` compares: the pool's rows (the `images` already checked against the
/// `embeddings`), then the evaluation images' when `against` is connected (their rows checked
/// against its vectors).
async fn read_all_pixels(
    ctx: &StageContext,
    verify: &VerifyConfig,
    against_ids: Option<&[String]>,
    device: dinoflow_vision::tch::Device,
) -> Result<Tensor, StageError> {
    let Pixels { data, .. } = read_pixels(ctx, "images", verify.size, device).await?;
    let Some(against_ids) = against_ids else {
        return Ok(data);
    };
    if ctx.input("against_images").is_none() {
        return Err(failed(CurateError::Config(
            "`verify` compares pixels, so with `against` it needs the evaluation images too: \
             connect `against_images` to the images the `against` vectors were computed from"
                .into(),
        )));
    }
    let eval = read_pixels(ctx, "against_images", verify.size, device).await?;
    same_rows(against_ids, &eval.ids, "against", "against_images").map_err(failed)?;
    Ok(Tensor::cat(&[data, eval.data], 0))
}

/// The grey images local features compare: the pool's rows, then the evaluation images' when
/// `against` and `against_images` are both connected (their rows checked against its vectors).
async fn read_all_grey(
    ctx: &StageContext,
    config: &FeaturesConfig,
    against_ids: Option<&[String]>,
) -> Result<Vec<GreyImage>, StageError> {
    let (_, mut grey) = read_grey(ctx, "images", config.side).await?;
    if let Some(against_ids) = against_ids
        && ctx.input("against_images").is_some()
    {
        let (ids, eval) = read_grey(ctx, "against_images", config.side).await?;
        same_rows(against_ids, &ids, "against", "against_images").map_err(failed)?;
        grey.extend(eval);
    }
    Ok(grey)
}

/// What [`decide`] works on.
struct Inputs<'a> {
    pool: &'a Vectors,
    against: Option<&'a Vectors>,
    /// With `verify`: the pool's grey pixels, then the evaluation images'.
    pixels: Option<&'a Tensor>,
    /// With `local_features`: the pool's grey images, then the evaluation images' if connected.
    grey: Option<&'a [GreyImage]>,
    rows: &'a [Row],
    cpus: usize,
}

/// What [`decide`] found.
struct Decided {
    /// Each row's removal, if removed.
    removals: Vec<Option<Removal>>,
    /// How the rows not removed for the evaluation set fell into groups.
    grouping: Grouping,
    /// With `verify`: pairs whose pixels were compared, and how many of them aligned.
    verified: Option<(usize, usize)>,
    /// With `local_features`: what it checked, confirmed and rejected.
    local: Option<LocalCounts>,
}

/// Decides each row's fate, or refuses embeddings that cannot tell images apart.
fn decide(config: &DedupConfig, inputs: &Inputs) -> Result<Decided, CurateError> {
    let Inputs {
        pool,
        against,
        pixels,
        grey,
        rows,
        cpus,
    } = *inputs;
    // On this (the stage's libtorch) thread, before any search.
    check_distinct(&pool.data, config.threshold, config.max_removed)?;
    let n = pool.len();
    let mut removals: Vec<Option<Removal>> = vec![None; n];
    if n == 0 {
        return Ok(Decided {
            removals,
            grouping: remove_copies(&[], &[], &mut []),
            verified: None,
            local: None,
        });
    }
    let k = config.k.min(n.saturating_sub(1)).max(1);
    let against = against.filter(|a| !a.is_empty());
    let mut candidates = Candidates::collect(pool, against, k)?;
    let verified = match (&config.verify, pixels) {
        (Some(v), Some(pixels)) => {
            candidates.verify(pixels, v)?;
            Some((candidates.verified_pairs, candidates.aligned_pairs))
        }
        _ => None,
    };
    let local = match (&config.local_features, grey) {
        (Some(f), Some(grey)) => {
            candidates.verify_local(grey, f, cpus)?;
            Some(candidates.local)
        }
        _ => None,
    };

    if let Some(eval) = against {
        remove_evaluation_overlap(
            n,
            eval.len(),
            &candidates.linked(config.against_threshold),
            |i, e| dot(&pool.data, i, &eval.data, e),
            &mut removals,
        );
    }

    let mut order: Vec<usize> = (0..n).collect();
    match config.keep {
        KeepRule::First => {}
        KeepRule::Largest => order.sort_by_key(|&i| {
            (
                std::cmp::Reverse(rows[i].pixels),
                std::cmp::Reverse(rows[i].file_size),
                i,
            )
        }),
    }
    let pool_links: Vec<_> = candidates
        .linked(config.threshold)
        .into_iter()
        .filter(|&(a, b, _)| a < n && b < n)
        .collect();
    let grouping = remove_copies(&order, &pool_links, &mut removals);
    Ok(Decided {
        removals,
        grouping,
        verified,
        local,
    })
}

fn dot(a: &Tensor, i: usize, b: &Tensor, j: usize) -> f32 {
    a.get(i as i64).dot(&b.get(j as i64)).double_value(&[]) as f32
}

async fn write_kept(ctx: &StageContext, keep: &[bool]) -> Result<(), StageError> {
    let input = ctx.input_dataset("images")?;
    let mut writer = ctx.dataset_writer("kept", input.schema());
    let mut stream = std::pin::pin!(input.batches(16_384));
    let mut offset = 0usize;
    while let Some(batch) = stream.try_next().await? {
        let n = batch.num_rows();
        let mask = BooleanArray::from(keep[offset..offset + n].to_vec());
        offset += n;
        let kept = arrow_select::filter::filter_record_batch(&batch, &mask)
            .map_err(|e| failed(CurateError::Arrow(e)))?;
        if kept.num_rows() > 0 {
            writer.write(&kept).await?;
        }
    }
    ctx.finish_dataset("kept", writer).await
}

fn duplicates_batch(
    rows: &[Row],
    removals: &[Option<Removal>],
    eval_ids: &[String],
) -> Result<RecordBatch, CurateError> {
    let mut id = StringBuilder::new();
    let mut source = StringBuilder::new();
    let mut rep = StringBuilder::new();
    let mut sim = Float32Builder::new();
    let mut reason = StringBuilder::new();
    let mut basis = StringBuilder::new();
    for (row, removal) in rows.iter().zip(removals) {
        let Some(Removal { target, evidence }) = removal else {
            continue;
        };
        id.append_value(&row.id);
        source.append_value(&row.source);
        match target {
            Target::Pool(r) => {
                rep.append_value(&rows[*r].id);
                reason.append_value("duplicate");
            }
            Target::Evaluation(e) => {
                rep.append_value(eval_ids.get(*e).map(String::as_str).unwrap_or_default());
                reason.append_value("evaluation");
            }
        }
        sim.append_value(evidence.score);
        basis.append_value(evidence.basis.name());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(source.finish()),
        Arc::new(rep.finish()),
        Arc::new(sim.finish()),
        Arc::new(reason.finish()),
        Arc::new(basis.finish()),
    ];
    Ok(RecordBatch::try_new(duplicates_schema(), columns)?)
}
