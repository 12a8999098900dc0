//! The `dedup` stage (dinov2.md §1.1): a kNN graph over the pool's copy-detection vectors, edges
//! above a cosine threshold, connected components with union-find, one representative per
//! component; with `against`, every component that reaches an evaluation image (at the stricter
//! `against_threshold`) is dropped whole. With `verify`, pairs of the graph above a lower
//! candidate cosine are also copies when their pixels align ([`crate::verify`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{UInt32Type, UInt64Type};
use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use dinoflow_engine::{
    Port, PortType, Resources, Stage, StageContext, StageError, async_trait, semver,
};
use dinoflow_storage::schemas::images;
use dinoflow_vision::DeviceChoice;
use dinoflow_vision::tch::Tensor;
use futures::TryStreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::unionfind::UnionFind;
use crate::vectors::{Vectors, read_vectors};
use crate::verify::{Pixels, VerifyConfig, aligned_similarity, read_pixels};
use crate::{CurateError, failed, neighbours};

/// Configuration of the `dedup` stage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// Neighbours per image in the kNN graph (the paper: 64).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Cosine similarity above which two pool images are copies (the paper: 0.6 for SSCD; use
    /// 0.93 with the built-in `dct` descriptor, see the workflow reference).
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
    /// Where the search runs.
    #[serde(default)]
    pub device: DeviceChoice,
}

fn default_k() -> usize {
    64
}
fn default_threshold() -> f64 {
    0.6
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
    ]))
}

/// The `dedup` stage kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Dedup;

/// What dedup needs to know about each image row.
struct Row {
    id: String,
    source: String,
    pixels: u64,
    file_size: u64,
}

/// Why a row is dropped: `(index of the row or evaluation image it duplicates, similarity, reason)`.
type Drop = Option<(DropTarget, f32)>;

#[derive(Clone, Copy)]
enum DropTarget {
    /// A pool row that is kept instead.
    Pool(usize),
    /// An evaluation image in the same component.
    Evaluation(usize),
}

#[async_trait]
impl Stage for Dedup {
    type Config = DedupConfig;

    fn kind(&self) -> &'static str {
        "dedup"
    }
    fn version(&self) -> semver::Version {
        semver::Version::new(1, 0, 0)
    }
    fn description(&self) -> &'static str {
        "near-duplicate removal: kNN graph, cosine threshold, connected components, one image kept \
         per component; components touching an evaluation set are dropped"
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
                "id, source, representative (kept row or evaluation image), similarity, reason",
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
        if config.verify.is_none() && ctx.input("against_images").is_some() {
            tracing::warn!(
                stage = %ctx.stage,
                "`against_images` is only read by `verify`, which is not configured: it is unused"
            );
        }
        let pixels = match &config.verify {
            Some(v) => {
                let against_ids = against.as_ref().map(|a| a.ids.clone());
                Some(read_all_pixels(ctx, v, against_ids.as_deref(), device).await?)
            }
            None => None,
        };
        let cfg = config.clone();
        let cpus = ctx.cpus;
        let (decided, against_ids, rows) = tokio::task::spawn_blocking(move || {
            dinoflow_vision::tch::set_num_threads(cpus.min(i32::MAX as usize) as i32);
            let decided = decide(&cfg, &pool, against.as_ref(), pixels.as_ref(), &rows);
            (decided, against.map(|a| a.ids), rows)
        })
        .await
        .map_err(|e| failed(CurateError::Worker(e.to_string())))?;
        let Decided {
            drops,
            components,
            verified,
        } = decided.map_err(failed)?;

        let keep: Vec<bool> = drops.iter().map(Option::is_none).collect();
        write_kept(ctx, &keep).await?;
        let out = duplicates_batch(&rows, &drops, against_ids.as_deref().unwrap_or(&[]))
            .map_err(failed)?;
        let mut writer = ctx.dataset_writer("duplicates", duplicates_schema());
        if out.num_rows() > 0 {
            writer.write(&out).await?;
        }
        ctx.finish_dataset("duplicates", writer).await?;
        let evaluation = drops
            .iter()
            .filter(|d| matches!(d, Some((DropTarget::Evaluation(_), _))))
            .count();
        ctx.metric("rows", rows.len() as u64);
        ctx.metric("kept", keep.iter().filter(|k| **k).count() as u64);
        ctx.metric(
            "duplicates",
            (drops.len() - keep.iter().filter(|k| **k).count() - evaluation) as u64,
        );
        ctx.metric("evaluation_overlap", evaluation as u64);
        ctx.metric("components", components as u64);
        if let Some(v) = verified {
            ctx.metric("verified_pairs", v.pairs as u64);
            ctx.metric("verified_copies", v.copies as u64);
        }
        Ok(())
    }
}

fn check_config(c: &DedupConfig) -> Result<(), CurateError> {
    if let Some(v) = &c.verify {
        v.check()?;
    }
    if c.k == 0 {
        return Err(CurateError::Config("k must be at least 1".into()));
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

/// Reads the id, source, size and file size of every image row.
async fn read_rows(ctx: &StageContext) -> Result<Vec<Row>, StageError> {
    let dataset = ctx.input_dataset("images")?;
    let mut rows = Vec::with_capacity(dataset.rows() as usize);
    let mut stream = std::pin::pin!(dataset.batches(65_536));
    while let Some(batch) = stream.try_next().await? {
        let col = |name: &str| {
            batch.column_by_name(name).cloned().ok_or_else(|| {
                failed(CurateError::Input(format!(
                    "the images have no `{name}` column"
                )))
            })
        };
        let (id, source) = (col(images::ID)?, col(images::SOURCE)?);
        let (width, height, size) = (
            col(images::WIDTH)?,
            col(images::HEIGHT)?,
            col(images::FILE_SIZE)?,
        );
        let text = |a: &ArrayRef, n: &str| {
            a.as_string_opt::<i32>()
                .cloned()
                .ok_or_else(|| failed(CurateError::Input(format!("`{n}` is not text"))))
        };
        let (id, source) = (text(&id, "id")?, text(&source, "source")?);
        let u32s = |a: &ArrayRef, n: &str| {
            a.as_primitive_opt::<UInt32Type>()
                .cloned()
                .ok_or_else(|| failed(CurateError::Input(format!("`{n}` is not uint32"))))
        };
        let (width, height) = (u32s(&width, "width")?, u32s(&height, "height")?);
        let size = size
            .as_primitive_opt::<UInt64Type>()
            .cloned()
            .ok_or_else(|| failed(CurateError::Input("`file_size` is not uint64".into())))?;
        for i in 0..batch.num_rows() {
            rows.push(Row {
                id: id.value(i).to_string(),
                source: source.value(i).to_string(),
                pixels: u64::from(width.value(i)) * u64::from(height.value(i)),
                file_size: size.value(i),
            });
        }
    }
    Ok(rows)
}

fn check_alignment(pool: &Vectors, rows: &[Row]) -> Result<(), CurateError> {
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    same_rows(&pool.ids, &ids, "embeddings", "images")
}

/// Checks that the vectors on port `vectors` were computed from the images on port `images`, row
/// by row.
fn same_rows<S: AsRef<str>>(
    vector_ids: &[String],
    image_ids: &[S],
    vectors: &str,
    images: &str,
) -> Result<(), CurateError> {
    let fix =
        format!("connect `{vectors}` to an embed stage whose input is the `{images}` dataset");
    if vector_ids.len() != image_ids.len() {
        return Err(CurateError::Input(format!(
            "`{vectors}` has {} rows and `{images}` {}: {fix}",
            vector_ids.len(),
            image_ids.len()
        )));
    }
    if let Some(i) = (0..image_ids.len()).find(|&i| vector_ids[i] != image_ids[i].as_ref()) {
        return Err(CurateError::Input(format!(
            "row {i}: `{vectors}` id {} but `{images}` id {}: {fix}",
            vector_ids[i],
            image_ids[i].as_ref()
        )));
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

/// What [`decide`] found.
struct Decided {
    /// Each row's fate.
    drops: Vec<Drop>,
    /// Components among the rows not dropped for the evaluation set.
    components: usize,
    /// With `verify`: pairs verified and how many of them aligned.
    verified: Option<Verified>,
}

/// The outcome of geometric verification.
struct Verified {
    /// Candidate pairs whose pixels were compared.
    pairs: usize,
    /// Those whose aligned pixels reached the threshold.
    copies: usize,
}

/// Decides each row's fate. `pixels` (with `verify`) holds the pool's rows, then the evaluation
/// images' rows.
fn decide(
    config: &DedupConfig,
    pool: &Vectors,
    against: Option<&Vectors>,
    pixels: Option<&Tensor>,
    rows: &[Row],
) -> Result<Decided, CurateError> {
    let n = pool.len();
    let mut drops: Vec<Drop> = vec![None; n];
    if n == 0 {
        return Ok(Decided {
            drops,
            components: 0,
            verified: None,
        });
    }
    let k = config.k.min(n.saturating_sub(1)).max(1);
    let graph = neighbours(&pool.data, &pool.data, k, true)?;
    let against = against.filter(|a| !a.is_empty());
    // Evaluation image e is vertex n + e.
    let cross = match against {
        Some(eval) => Some(neighbours(&eval.data, &pool.data, config.k.min(n), false)?),
        None => None,
    };
    let cross_edges = || {
        cross
            .iter()
            .flat_map(|c| c.edges())
            .map(move |(e, i, s)| (n + e, i, s))
    };

    let (aligned, verified) = match (&config.verify, pixels) {
        (Some(v), Some(pixels)) => {
            let mut pairs: Vec<(usize, usize)> = graph
                .edges()
                .chain(cross_edges())
                .filter(|&(_, _, s)| f64::from(s) > v.candidates)
                .map(|(a, b, _)| (a.min(b), a.max(b)))
                .collect();
            pairs.sort_unstable();
            pairs.dedup();
            let scores = aligned_similarity(pixels, &pairs, v)?;
            let aligned: HashSet<(usize, usize)> = pairs
                .iter()
                .zip(&scores)
                .filter(|(_, s)| f64::from(**s) > v.threshold)
                .map(|(p, _)| *p)
                .collect();
            let verified = Verified {
                pairs: pairs.len(),
                copies: aligned.len(),
            };
            (aligned, Some(verified))
        }
        _ => (HashSet::new(), None),
    };
    let linked = |a: usize, b: usize, s: f32, threshold: f64| {
        f64::from(s) > threshold || aligned.contains(&(a.min(b), a.max(b)))
    };

    // Components that touch the evaluation set, at the stricter threshold.
    if let Some(eval) = against {
        let m = eval.len();
        let mut uf = UnionFind::new(n + m);
        for (a, b, s) in graph.edges().chain(cross_edges()) {
            if linked(a, b, s, config.against_threshold) {
                uf.union(a, b);
            }
        }
        let mut eval_of_root = HashMap::new();
        for e in 0..m {
            eval_of_root.entry(uf.find(n + e)).or_insert(e);
        }
        for (i, drop) in drops.iter_mut().enumerate() {
            if let Some(&e) = eval_of_root.get(&uf.find(i)) {
                *drop = Some((DropTarget::Evaluation(e), dot(&pool.data, i, &eval.data, e)));
            }
        }
    }

    // Self-dedup among the remaining rows.
    let mut uf = UnionFind::new(n);
    for (i, j, s) in graph.edges() {
        if linked(i, j, s, config.threshold) && drops[i].is_none() && drops[j].is_none() {
            uf.union(i, j);
        }
    }
    let better = |a: usize, b: usize| match config.keep {
        KeepRule::First => a < b,
        KeepRule::Largest => {
            (rows[a].pixels, rows[a].file_size, std::cmp::Reverse(a))
                > (rows[b].pixels, rows[b].file_size, std::cmp::Reverse(b))
        }
    };
    let mut best: HashMap<usize, usize> = HashMap::new();
    for i in (0..n).filter(|&i| drops[i].is_none()) {
        let root = uf.find(i);
        let entry = best.entry(root).or_insert(i);
        if better(i, *entry) {
            *entry = i;
        }
    }
    for i in 0..n {
        if drops[i].is_some() {
            continue;
        }
        let rep = best[&uf.find(i)];
        if rep != i {
            drops[i] = Some((DropTarget::Pool(rep), dot(&pool.data, i, &pool.data, rep)));
        }
    }
    Ok(Decided {
        drops,
        components: best.len(),
        verified,
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
    drops: &[Drop],
    eval_ids: &[String],
) -> Result<RecordBatch, CurateError> {
    let mut id = StringBuilder::new();
    let mut source = StringBuilder::new();
    let mut rep = StringBuilder::new();
    let mut sim = Float32Builder::new();
    let mut reason = StringBuilder::new();
    for (row, drop) in rows.iter().zip(drops) {
        let Some((target, s)) = drop else { continue };
        id.append_value(&row.id);
        source.append_value(&row.source);
        match target {
            DropTarget::Pool(r) => {
                rep.append_value(&rows[*r].id);
                reason.append_value("duplicate");
            }
            DropTarget::Evaluation(e) => {
                rep.append_value(eval_ids.get(*e).map(String::as_str).unwrap_or_default());
                reason.append_value("evaluation");
            }
        }
        sim.append_value(*s);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(source.finish()),
        Arc::new(rep.finish()),
        Arc::new(sim.finish()),
        Arc::new(reason.finish()),
    ];
    Ok(RecordBatch::try_new(duplicates_schema(), columns)?)
}
