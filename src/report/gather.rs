//! What the report shows, read from the run database and the store only: the run and its stages,
//! the funnel, sample duplicate groups and retrieval results with thumbnails, training curves and
//! evaluation tables.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use dinoflow_engine::{Engine, EngineError, RunRow, StageRunRow};
use dinoflow_storage::schemas::images;
use dinoflow_storage::{CacheState, Dataset, Manifest, OutputKind, Store};
use futures::TryStreamExt;

use super::curves::{Curves, read_curves};
use super::thumbs::{self, ImageDataset, Thumb};
use crate::funnel::{self, FunnelStage};

/// Duplicate groups shown per reason (`duplicate`, `evaluation`) and dedup stage.
const GROUPS_PER_REASON: usize = 6;
/// Queries (seeds or clusters) shown per retrieval stage.
const QUERIES_SHOWN: usize = 8;
/// Images shown per duplicate group or query.
const MEMBERS_SHOWN: usize = 8;

/// Everything the report shows.
pub struct RunData {
    /// The run.
    pub run: RunRow,
    /// Its stages in the order they started.
    pub stages: Vec<StageView>,
    /// Rows in and out of each stage (same order as `stages`).
    pub funnel: Vec<FunnelStage>,
    /// Sample duplicate groups of each dedup stage.
    pub duplicates: Vec<DuplicateSection>,
    /// Sample results of each retrieval stage.
    pub retrievals: Vec<RetrievalSection>,
    /// The curves of each training stage (an output `metrics` with a `step` column, and its
    /// `monitor` output).
    pub curves: Vec<Curves>,
    /// The reports of the eval stages, by stage name.
    pub evaluations: BTreeMap<String, dinoflow_eval::Report>,
}

/// One stage run and where its inputs come from.
pub struct StageView {
    /// The run database's row.
    pub row: StageRunRow,
    /// Its outputs, when still whole in the store.
    pub manifest: Option<Manifest>,
    /// Its inputs: (input port key, upstream stage name, upstream port).
    pub edges: Vec<(String, String, String)>,
    /// For a cached stage: the stage run that computed its outputs (its run, time and metrics).
    pub computed: Option<StageRunRow>,
}

/// One image of a group: its id, thumbnail if found, and similarity to the group's head.
pub struct Shown {
    /// Image id.
    pub id: String,
    /// Its thumbnail (`None` when no image dataset of the run still holds it).
    pub thumb: Option<Thumb>,
    /// Cosine similarity to the group's representative or query, when known.
    pub similarity: Option<f32>,
    /// What the similarity measures, when dedup says (`descriptor`, `mirrored`, ...).
    pub basis: Option<String>,
}

/// A component of copies: the image kept (or the evaluation image matched) and the dropped ones.
pub struct DuplicateGroup {
    /// `duplicate` (the representative is kept) or `evaluation` (it is an evaluation image).
    pub reason: String,
    /// The representative.
    pub representative: Shown,
    /// Members dropped, most similar first (at most [`MEMBERS_SHOWN`]).
    pub members: Vec<Shown>,
    /// All members of the group.
    pub total_members: usize,
}

/// The duplicate groups of one dedup stage.
pub struct DuplicateSection {
    /// Stage name.
    pub stage: String,
    /// Rows dropped.
    pub dropped: u64,
    /// Groups by reason: (reason, groups in all).
    pub groups_by_reason: Vec<(String, usize)>,
    /// Sample groups, largest first.
    pub groups: Vec<DuplicateGroup>,
}

/// What one seed (or cluster) retrieved.
pub struct RetrievalGroup {
    /// The seed id or `cluster:N`.
    pub query: String,
    /// The seed's thumbnail (none for clusters).
    pub thumb: Option<Thumb>,
    /// Retrieved images, most similar first.
    pub results: Vec<Shown>,
    /// Images this query retrieved in all.
    pub total: usize,
}

/// The results of one retrieval stage.
pub struct RetrievalSection {
    /// Stage name.
    pub stage: String,
    /// Rows retrieved.
    pub rows: u64,
    /// Distinct queries in the output.
    pub queries: usize,
    /// Sample queries in order of first appearance.
    pub groups: Vec<RetrievalGroup>,
}

/// Reads everything about run `id` (or the latest run for `None`).
pub async fn gather(engine: &Engine, id: Option<i64>) -> Result<RunData> {
    let db = engine.db();
    let store = engine.store();
    let id = match id {
        Some(id) => id,
        None => db
            .runs(1)?
            .first()
            .map(|r| r.id)
            .ok_or_else(|| EngineError::NotFound(format!("no runs in {}", store.url())))?,
    };
    let run = db.run(id)?.ok_or_else(|| {
        EngineError::NotFound(format!(
            "no run {id} in {}; `dinoflow runs` lists them",
            store.url()
        ))
    })?;
    let rows = db.stages_of_run(id)?;
    let funnel = funnel::funnel(store, &rows).await?;
    let evaluations = evaluations(store, &rows).await?;
    let by_fingerprint: HashMap<&str, &str> = rows
        .iter()
        .map(|s| (s.fingerprint.as_str(), s.stage.as_str()))
        .collect();
    let mut stages = Vec::with_capacity(rows.len());
    for row in &rows {
        let manifest = match store.check_cached(&row.fingerprint).await? {
            CacheState::Hit(m) => Some(m),
            CacheState::Miss(_) => None,
        };
        let edges = row
            .inputs
            .iter()
            .map(|(port, source)| {
                let (fp, upstream_port) = source.split_once('/').unwrap_or((source, ""));
                let upstream = by_fingerprint.get(fp).copied().unwrap_or(fp);
                (
                    port.clone(),
                    upstream.to_string(),
                    upstream_port.to_string(),
                )
            })
            .collect();
        let computed = if row.status == "cached" {
            db.computed(&row.fingerprint)?
        } else {
            None
        };
        stages.push(StageView {
            row: row.clone(),
            manifest,
            edges,
            computed,
        });
    }
    let image_sets = image_datasets(store, &stages)?;
    let mut duplicates = Vec::new();
    let mut retrievals = Vec::new();
    let mut curves = Vec::new();
    for s in &stages {
        let Some(m) = &s.manifest else { continue };
        let name = &s.row.stage;
        if s.row.kind == "dedup"
            && let Some(d) = open(store, m, "duplicates")?
        {
            duplicates.push(duplicate_section(name, &d, &image_sets).await?);
        }
        if s.row.kind == "retrieval"
            && let Some(d) = open(store, m, "retrieved")?
        {
            retrievals.push(retrieval_section(name, &d, &image_sets).await?);
        }
        if let Some(d) = open(store, m, "metrics")?
            && d.schema().column_with_name("step").is_some()
        {
            let monitor = open(store, m, "monitor")?
                .filter(|d| d.schema().column_with_name("step").is_some());
            curves.push(read_curves(name, &d, monitor.as_ref()).await?);
        }
    }
    Ok(RunData {
        run,
        stages,
        funnel,
        duplicates,
        retrievals,
        curves,
        evaluations,
    })
}

/// The reports of the `eval` stages among `stages` whose outputs are still in the store, by stage
/// name.
pub async fn evaluations(
    store: &Store,
    stages: &[StageRunRow],
) -> Result<BTreeMap<String, dinoflow_eval::Report>> {
    let mut out = BTreeMap::new();
    for s in stages.iter().filter(|s| s.kind == "eval") {
        if !matches!(
            store.check_cached(&s.fingerprint).await?,
            CacheState::Hit(_)
        ) {
            continue;
        }
        let key = format!(
            "{}/{}",
            dinoflow_storage::object_dir(&s.fingerprint),
            dinoflow_eval::REPORT_FILE
        );
        let bytes = store
            .get(&key)
            .await
            .with_context(|| format!("reading the report of `{}`", s.stage))?;
        let report = serde_json::from_slice(&bytes)
            .with_context(|| format!("the report of `{}` ({key}) is not valid", s.stage))?;
        out.insert(s.stage.clone(), report);
    }
    Ok(out)
}

/// The dataset on output `port` of manifest `m`, if it has one.
fn open(store: &Store, m: &Manifest, port: &str) -> Result<Option<Dataset>> {
    match m.outputs.get(port) {
        Some(o) if o.kind == OutputKind::Dataset => Ok(Some(Dataset::open(
            store.clone(),
            &m.fingerprint,
            o.clone(),
        )?)),
        _ => Ok(None),
    }
}

/// Every output of the run in the images schema (where thumbnails are looked up), in stage order.
fn image_datasets(store: &Store, stages: &[StageView]) -> Result<Vec<ImageDataset>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for s in stages {
        let Some(m) = &s.manifest else { continue };
        for (port, o) in &m.outputs {
            let has_pixels = o.schema.as_ref().is_some_and(|schema| {
                [images::ID, images::PIXELS, images::PIXEL_WIDTH]
                    .iter()
                    .all(|c| schema.column_with_name(c).is_some())
            });
            if has_pixels && seen.insert(o.digest.clone()) {
                out.push(ImageDataset {
                    name: format!("{}.{port}", s.row.stage),
                    dataset: Dataset::open(store.clone(), &m.fingerprint, o.clone())?,
                });
            }
        }
    }
    Ok(out)
}

/// Reads every batch of `d`.
async fn read_all(d: &Dataset) -> Result<Vec<RecordBatch>> {
    Ok(d.batches(65_536).try_collect().await?)
}

/// The string column `name` of `batch`.
fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a arrow_array::StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .with_context(|| format!("no text column `{name}`"))
}

/// The Float32 column `name` of `batch` (nulls as `None`).
fn floats(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f32>>> {
    let column = batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Float32Type>())
        .with_context(|| format!("no float column `{name}`"))?;
    Ok(column.iter().collect())
}

/// The members of a duplicate group: (id, similarity to the representative, its basis).
type Members = Vec<(String, f32, Option<String>)>;

/// Groups the rows of dedup's `duplicates` output by representative and shows the largest.
async fn duplicate_section(
    stage: &str,
    d: &Dataset,
    image_sets: &[ImageDataset],
) -> Result<DuplicateSection> {
    // (representative, reason) → members, in row order.
    let mut groups: BTreeMap<(String, String), Members> = BTreeMap::new();
    for batch in read_all(d)
        .await
        .with_context(|| format!("reading the duplicates of `{stage}`"))?
    {
        let ids = strings(&batch, "id")?;
        let reps = strings(&batch, "representative")?;
        let reasons = strings(&batch, "reason")?;
        let sims = floats(&batch, "similarity")?;
        // Written by dedup 1.1 and later.
        let bases = batch
            .column_by_name("basis")
            .is_some()
            .then(|| strings(&batch, "basis"))
            .transpose()?;
        for (row, sim) in sims.into_iter().enumerate() {
            groups
                .entry((reps.value(row).to_string(), reasons.value(row).to_string()))
                .or_default()
                .push((
                    ids.value(row).to_string(),
                    sim.unwrap_or(f32::NAN),
                    bases.map(|b| b.value(row).to_string()),
                ));
        }
    }
    let mut by_reason: BTreeMap<String, Vec<(String, Members)>> = BTreeMap::new();
    for ((rep, reason), members) in groups {
        by_reason.entry(reason).or_default().push((rep, members));
    }
    let groups_by_reason = by_reason
        .iter()
        .map(|(reason, g)| (reason.clone(), g.len()))
        .collect();
    let mut chosen = Vec::new();
    for (reason, mut groups) in by_reason {
        // Largest first; ties by representative id, so the sample is the same on every render.
        groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        for (rep, mut members) in groups.into_iter().take(GROUPS_PER_REASON) {
            members.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            chosen.push((reason.clone(), rep, members));
        }
    }
    let wanted: BTreeSet<String> = chosen
        .iter()
        .flat_map(|(_, rep, members)| {
            std::iter::once(rep.clone()).chain(
                members
                    .iter()
                    .take(MEMBERS_SHOWN)
                    .map(|(id, _, _)| id.clone()),
            )
        })
        .collect();
    let found = thumbs::find(image_sets, &wanted).await;
    let shown = |id: &str, similarity: Option<f32>, basis: Option<String>| Shown {
        id: id.to_string(),
        thumb: found.get(id).cloned(),
        similarity,
        basis,
    };
    Ok(DuplicateSection {
        stage: stage.to_string(),
        dropped: d.rows(),
        groups_by_reason,
        groups: chosen
            .into_iter()
            .map(|(reason, rep, members)| DuplicateGroup {
                reason,
                representative: shown(&rep, None, None),
                total_members: members.len(),
                members: members
                    .iter()
                    .take(MEMBERS_SHOWN)
                    .map(|(id, sim, basis)| shown(id, Some(*sim), basis.clone()))
                    .collect(),
            })
            .collect(),
    })
}

/// Groups retrieval's output by `retrieved_by` and shows the first queries' best results.
async fn retrieval_section(
    stage: &str,
    d: &Dataset,
    image_sets: &[ImageDataset],
) -> Result<RetrievalSection> {
    let mut order: Vec<String> = Vec::new();
    let mut results: HashMap<String, Vec<(String, Option<f32>)>> = HashMap::new();
    for batch in read_all(d)
        .await
        .with_context(|| format!("reading the output of `{stage}`"))?
    {
        let ids = strings(&batch, images::ID)?;
        let queries = strings(&batch, "retrieved_by")?;
        let sims = floats(&batch, "similarity")?;
        for (row, sim) in sims.into_iter().enumerate() {
            let query = queries.value(row);
            if !results.contains_key(query) {
                order.push(query.to_string());
            }
            results
                .entry(query.to_string())
                .or_default()
                .push((ids.value(row).to_string(), sim));
        }
    }
    let queries = order.len();
    let mut chosen = Vec::new();
    for query in order.into_iter().take(QUERIES_SHOWN) {
        let mut hits = results.remove(&query).unwrap_or_default();
        let total = hits.len();
        hits.sort_by(|a, b| {
            let (x, y) = (a.1.unwrap_or(f32::MIN), b.1.unwrap_or(f32::MIN));
            y.total_cmp(&x).then(a.0.cmp(&b.0))
        });
        hits.truncate(MEMBERS_SHOWN);
        chosen.push((query, hits, total));
    }
    let wanted: BTreeSet<String> = chosen
        .iter()
        .flat_map(|(query, hits, _)| {
            std::iter::once(query.clone()).chain(hits.iter().map(|(id, _)| id.clone()))
        })
        .collect();
    let found = thumbs::find(image_sets, &wanted).await;
    Ok(RetrievalSection {
        stage: stage.to_string(),
        rows: d.rows(),
        queries,
        groups: chosen
            .into_iter()
            .map(|(query, hits, total)| RetrievalGroup {
                thumb: found.get(&query).cloned(),
                query,
                total,
                results: hits
                    .into_iter()
                    .map(|(id, similarity)| Shown {
                        thumb: found.get(&id).cloned(),
                        id,
                        similarity,
                        basis: None,
                    })
                    .collect(),
            })
            .collect(),
    })
}
