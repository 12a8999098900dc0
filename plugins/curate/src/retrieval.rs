//! The `retrieval` stage (dinov2.md §1.1–1.2): pulls images from an uncurated pool towards curated
//! seeds, by nearest neighbours per seed (`sample`), by k-means clusters that hold enough seeds
//! (`cluster`), or balances the pool with hierarchical k-means (`hierarchical`); `random` is the
//! uncurated baseline of the same size. Each output row says what retrieved it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use dinoflow_engine::{
    Port, PortType, Resources, Stage, StageContext, StageError, async_trait, semver,
};
use dinoflow_search::{
    HierarchicalKMeansConfig, KMeansConfig, SampleStrategy, SamplingOptions, hierarchical_kmeans,
    hierarchical_sampling, kmeans, nearest_centroids,
};
use dinoflow_storage::schemas::images;
use dinoflow_vision::DeviceChoice;
use dinoflow_vision::tch::{Device, Kind, Tensor};
use futures::TryStreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::vectors::{Vectors, read_vectors};
use crate::{CurateError, failed, neighbours};

/// Configuration of the `retrieval` stage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrievalConfig {
    /// How images are chosen.
    pub mode: Mode,
    /// Where the search and clustering run.
    #[serde(default)]
    pub device: DeviceChoice,
}

/// How the retrieval stage chooses pool images.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Mode {
    /// The `per_seed` nearest pool images of every seed (the paper: 4, or 32 for ImageNet-1k),
    /// optionally only those above `threshold`; an image found by several seeds appears once,
    /// credited to the most similar seed.
    Sample {
        /// Neighbours per seed.
        per_seed: usize,
        /// Minimum cosine similarity, if any (the paper uses none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        threshold: Option<f64>,
    },
    /// k-means on the pool; from every cluster holding at least `min_seeds` seeds, `per_cluster`
    /// images at random (the paper: 100,000 clusters, more than 3 seeds, 10,000 per cluster, a cap
    /// of 1M per dataset).
    Cluster {
        /// k of the k-means.
        clusters: usize,
        /// Seeds a cluster must hold to be used.
        #[serde(default = "default_min_seeds")]
        min_seeds: usize,
        /// Images taken from each used cluster (all of it when smaller).
        per_cluster: usize,
        /// Total images at most; used clusters then get balanced shares.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cap: Option<usize>,
        /// Lloyd iterations.
        #[serde(default = "default_iterations")]
        iterations: usize,
        /// Seed of the clustering and the sampling.
        #[serde(default)]
        seed: u64,
    },
    /// ssl-data-curation: hierarchical k-means with resampling on the pool, then balanced sampling
    /// of `target` images (seeds are not used).
    Hierarchical {
        /// Clusters per level, level 1 first (e.g. [1000, 100, 10]).
        levels: Vec<usize>,
        /// Images to select.
        target: usize,
        /// Resampling steps per level (ssl-data-curation: 10).
        #[serde(default = "default_resampling_steps")]
        resampling_steps: usize,
        /// Points taken per cluster when resampling, per level (ssl-data-curation's toy config:
        /// [10, 3]); default 10 at level 1 and 3 above.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sample_sizes: Option<Vec<usize>>,
        /// Seed of the clustering and the sampling.
        #[serde(default)]
        seed: u64,
    },
    /// The uncurated baseline (the paper's "uncurated data of the same size"): pool images
    /// uniformly at random, `count` of them or, without `count`, as many as the `like` input has
    /// rows (the curated set it is compared with).
    Random {
        /// Images to take (all of the pool when larger); omit to match the `like` input.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<usize>,
        /// Seed of the sampling.
        #[serde(default)]
        seed: u64,
    },
}

fn default_min_seeds() -> usize {
    3
}
fn default_iterations() -> usize {
    20
}
fn default_resampling_steps() -> usize {
    10
}

/// The `retrieval` stage kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Retrieval;

/// What retrieved a pool row: the seed id or cluster, and the similarity.
type Pick = (String, Option<f32>);

/// The images schema plus the lineage columns.
fn retrieved_schema(images: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = images.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("retrieved_by", DataType::Utf8, false));
    fields.push(Field::new("similarity", DataType::Float32, true));
    Arc::new(Schema::new(fields))
}

#[async_trait]
impl Stage for Retrieval {
    type Config = RetrievalConfig;

    fn kind(&self) -> &'static str {
        "retrieval"
    }
    fn version(&self) -> semver::Version {
        semver::Version::new(1, 1, 0)
    }
    fn description(&self) -> &'static str {
        "retrieves pool images near curated seeds (nearest neighbours or k-means clusters), \
         balances the pool with hierarchical k-means, or samples it at random (the uncurated \
         baseline)"
    }
    fn inputs(&self) -> Vec<Port> {
        vec![
            Port::new("images", PortType::Dataset("images"), "the pool's images"),
            Port::new(
                "pool",
                PortType::Dataset("embeddings"),
                "the pool's vectors (embed on the same images), same row order",
            ),
            Port::optional(
                "seeds",
                PortType::Dataset("embeddings"),
                "vectors of the curated seed images (sample and cluster modes)",
            ),
            Port::optional(
                "like",
                PortType::Dataset("images"),
                "random mode without `count`: the dataset whose row count the sample matches",
            ),
        ]
    }
    fn outputs(&self) -> Vec<Port> {
        vec![Port::new(
            "retrieved",
            PortType::Dataset("images"),
            "the chosen pool images in pool order, with `retrieved_by` and `similarity`",
        )]
    }
    fn resources(&self, config: &RetrievalConfig) -> Resources {
        Resources {
            cpus: u32::MAX,
            gpus: u32::from(config.device == DeviceChoice::Cuda),
            memory_gb: 2.0,
        }
    }

    async fn run(&self, config: &RetrievalConfig, ctx: &StageContext) -> Result<(), StageError> {
        let device = config.device.resolve().map_err(failed)?;
        let needs_seeds = matches!(config.mode, Mode::Sample { .. } | Mode::Cluster { .. });
        if needs_seeds && ctx.input("seeds").is_none() {
            return Err(failed(CurateError::Config(
                "this mode needs the `seeds` input (the curated images' vectors)".into(),
            )));
        }
        let mut mode = config.mode.clone();
        if let Mode::Random { count, .. } = &mut mode {
            *count = Some(random_count(*count, ctx)?);
        }
        let pool = read_vectors(ctx, "pool", device).await?;
        let seeds = match ctx.input("seeds") {
            Some(_) => Some(read_vectors(ctx, "seeds", device).await?),
            None => None,
        };
        let cpus = ctx.cpus;
        let (picked, pool_ids) = tokio::task::spawn_blocking(move || {
            dinoflow_vision::tch::set_num_threads(cpus.min(i32::MAX as usize) as i32);
            (choose(&mode, &pool, seeds.as_ref()), pool.ids)
        })
        .await
        .map_err(|e| failed(CurateError::Worker(e.to_string())))?;
        let picked = picked.map_err(failed)?;
        let rows = write_retrieved(ctx, &pool_ids, &picked).await?;
        ctx.metric("pool", pool_ids.len() as u64);
        ctx.metric("retrieved", rows);
        Ok(())
    }
}

/// The chosen pool rows with what retrieved them.
fn choose(
    mode: &Mode,
    pool: &Vectors,
    seeds: Option<&Vectors>,
) -> Result<BTreeMap<usize, Pick>, CurateError> {
    let search = |e: dinoflow_search::SearchError| CurateError::Search(e.to_string());
    let mut picked: BTreeMap<usize, Pick> = BTreeMap::new();
    if pool.is_empty() {
        return Ok(picked);
    }
    match mode {
        Mode::Sample {
            per_seed,
            threshold,
        } => {
            let seeds = seeds.ok_or_else(|| CurateError::Config("no seeds".into()))?;
            if *per_seed == 0 {
                return Err(CurateError::Config("per_seed must be at least 1".into()));
            }
            if seeds.is_empty() {
                return Ok(picked);
            }
            let found = neighbours(&seeds.data, &pool.data, *per_seed, false)?;
            for (s, row, sim) in found.edges() {
                if threshold.is_some_and(|t| f64::from(sim) < t) {
                    continue;
                }
                let better = picked
                    .get(&row)
                    .is_none_or(|(_, old)| old.is_some_and(|o| sim > o));
                if better {
                    picked.insert(row, (seeds.ids[s].clone(), Some(sim)));
                }
            }
        }
        Mode::Cluster {
            clusters,
            min_seeds,
            per_cluster,
            cap,
            iterations,
            seed,
        } => {
            let seeds = seeds.ok_or_else(|| CurateError::Config("no seeds".into()))?;
            let config = KMeansConfig {
                k: *clusters,
                iterations: *iterations,
                seed: *seed,
                ..KMeansConfig::default()
            };
            let km = kmeans(&pool.data, &config).map_err(search)?;
            let assignment = to_i64(&km.assignment)?;
            let seed_clusters = if seeds.is_empty() {
                Vec::new()
            } else {
                to_i64(
                    &nearest_centroids(
                        &seeds.data,
                        &km.centroids,
                        dinoflow_search::DEFAULT_TILE_BYTES,
                    )
                    .map_err(search)?
                    .ids,
                )?
            };
            let mut seeds_in = vec![0usize; *clusters];
            for c in seed_clusters {
                seeds_in[c as usize] += 1;
            }
            let mut members: Vec<Vec<usize>> = vec![Vec::new(); *clusters];
            for (row, c) in assignment.iter().enumerate() {
                members[*c as usize].push(row);
            }
            let used: Vec<usize> = (0..*clusters)
                .filter(|&c| seeds_in[c] >= *min_seeds)
                .collect();
            let mut quotas: Vec<usize> = used
                .iter()
                .map(|&c| members[c].len().min(*per_cluster))
                .collect();
            if let Some(cap) = cap.filter(|&cap| quotas.iter().sum::<usize>() > cap) {
                let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(*seed);
                quotas = dinoflow_search::allocate(&quotas, cap, &mut rng);
            }
            let norms = km.centroids.norm_scalaropt_dim(2, [1i64].as_slice(), false);
            for (&c, &quota) in used.iter().zip(&quotas) {
                let mut rows = members[c].clone();
                shuffle(
                    &mut rows,
                    *seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                for row in rows.into_iter().take(quota) {
                    let sim = pool
                        .data
                        .get(row as i64)
                        .dot(&km.centroids.get(c as i64))
                        .double_value(&[])
                        / norms.double_value(&[c as i64]).max(1e-12);
                    picked.insert(row, (format!("cluster:{c}"), Some(sim as f32)));
                }
            }
        }
        Mode::Hierarchical {
            levels,
            target,
            resampling_steps,
            sample_sizes,
            seed,
        } => {
            let sizes = sample_sizes.clone().unwrap_or_else(|| {
                (0..levels.len())
                    .map(|l| if l == 0 { 10 } else { 3 })
                    .collect()
            });
            let mut config =
                HierarchicalKMeansConfig::new(levels.clone(), *resampling_steps, sizes);
            config.kmeans.seed = *seed;
            let h = hierarchical_kmeans(&pool.data, &config).map_err(search)?;
            let options = SamplingOptions {
                target: (*target).min(pool.len()),
                strategy: SampleStrategy::Random,
                multiplier: 1,
                seed: *seed,
            };
            let sample = hierarchical_sampling(&h, &options).map_err(search)?;
            for (row, c) in sample.indices.iter().zip(&sample.level1_clusters) {
                picked.insert(*row as usize, (format!("cluster:{c}"), None));
            }
        }
        Mode::Random { count, seed } => {
            let count = count.ok_or_else(|| CurateError::Config("no sample size".into()))?;
            let mut rows: Vec<usize> = (0..pool.len()).collect();
            shuffle(&mut rows, *seed);
            for row in rows.into_iter().take(count) {
                picked.insert(row, ("random".to_string(), None));
            }
        }
    }
    Ok(picked)
}

/// The random mode's sample size: `count`, or the row count of the `like` input.
fn random_count(count: Option<usize>, ctx: &StageContext) -> Result<usize, StageError> {
    match (count, ctx.input("like").is_some()) {
        (Some(_), true) => Err(failed(CurateError::Config(
            "random mode has both `count` and the `like` input: keep one".into(),
        ))),
        (Some(n), false) => Ok(n),
        (None, true) => Ok(ctx.input_dataset("like")?.rows() as usize),
        (None, false) => Err(failed(CurateError::Config(
            "random mode needs `count` or the `like` input (the dataset whose size it matches)"
                .into(),
        ))),
    }
}

fn to_i64(t: &Tensor) -> Result<Vec<i64>, CurateError> {
    Vec::<i64>::try_from(t.to_kind(Kind::Int64).to_device(Device::Cpu).flatten(0, -1))
        .map_err(|e| CurateError::Search(e.to_string()))
}

/// A deterministic Fisher–Yates shuffle.
fn shuffle(rows: &mut [usize], seed: u64) {
    use rand::seq::SliceRandom;
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
    rows.shuffle(&mut rng);
}

/// Streams the pool's images and writes the picked rows with their lineage; checks that the images
/// are the pool's, row by row.
async fn write_retrieved(
    ctx: &StageContext,
    pool_ids: &[String],
    picked: &BTreeMap<usize, Pick>,
) -> Result<u64, StageError> {
    let input = ctx.input_dataset("images")?;
    if input.rows() as usize != pool_ids.len() {
        return Err(failed(CurateError::Input(format!(
            "the pool vectors have {} rows and the images {}: connect `pool` to an embed stage whose \
             input is this `images` dataset",
            pool_ids.len(),
            input.rows()
        ))));
    }
    let schema = retrieved_schema(&input.schema());
    let mut writer = ctx.dataset_writer("retrieved", schema.clone());
    let mut stream = std::pin::pin!(input.batches(16_384));
    let mut offset = 0usize;
    while let Some(batch) = stream.try_next().await? {
        let n = batch.num_rows();
        let ids = batch
            .column_by_name(images::ID)
            .and_then(|c| c.as_string_opt::<i32>().cloned())
            .ok_or_else(|| failed(CurateError::Input("the images have no `id` column".into())))?;
        if let Some(i) = (0..n).find(|&i| ids.value(i) != pool_ids[offset + i]) {
            return Err(failed(CurateError::Input(format!(
                "row {}: pool id {} but images id {}: connect `pool` to an embed stage whose input \
                 is this `images` dataset",
                offset + i,
                pool_ids[offset + i],
                ids.value(i)
            ))));
        }
        let mask: BooleanArray = (0..n)
            .map(|i| Some(picked.contains_key(&(offset + i))))
            .collect();
        let kept = arrow_select::filter::filter_record_batch(&batch, &mask)
            .map_err(|e| failed(CurateError::Arrow(e)))?;
        let mut by = StringBuilder::new();
        let mut sim = Float32Builder::new();
        for (label, s) in picked.range(offset..offset + n).map(|(_, pick)| pick) {
            by.append_value(label);
            sim.append_option(*s);
        }
        offset += n;
        if kept.num_rows() == 0 {
            continue;
        }
        let mut columns: Vec<ArrayRef> = kept.columns().to_vec();
        columns.push(Arc::new(by.finish()));
        columns.push(Arc::new(sim.finish()));
        let out = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| failed(CurateError::Arrow(e)))?;
        writer.write(&out).await?;
    }
    let rows = writer.rows();
    ctx.finish_dataset("retrieved", writer).await?;
    Ok(rows)
}
