//! The report page: one HTML document with its styles, images and charts inline.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::curves::Curves;
use super::gather::{DuplicateSection, RetrievalSection, RunData, Shown, StageView};
use super::svg;
use crate::funnel;

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 20px 40px; color: #1d2327; }
h1 { font-size: 22px; margin: 18px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #dde3e7; }
h3 { font-size: 15px; margin: 16px 0 6px; }
nav a { margin-right: 12px; } .muted { color: #607d8b; }
table { border-collapse: collapse; margin: 6px 0 12px; } th, td { padding: 3px 10px; border-bottom: 1px solid #eceff1; text-align: left; vertical-align: top; }
th { background: #f5f7f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font: 12px ui-monospace, monospace; } pre { background: #f5f7f8; padding: 10px; overflow: auto; max-height: 480px; }
.badge { display: inline-block; padding: 0 8px; border-radius: 9px; font-size: 12px; }
.st-ok { background: #e8f5e9; color: #1b5e20; } .st-cached { background: #e3f2fd; color: #0d47a1; }
.st-failed { background: #ffebee; color: #b71c1c; } .st-running, .st-cancelled, .st-skipped { background: #eceff1; color: #37474f; }
.scroll { overflow-x: auto; }
.card { display: inline-block; vertical-align: top; margin: 0 18px 10px 0; } .card h3 { margin-top: 6px; }
svg.dag .node rect { fill: #eceff1; stroke: #90a4ae; } svg.dag .status-ok rect { fill: #e8f5e9; stroke: #43a047; }
svg.dag .status-cached rect { fill: #e3f2fd; stroke: #1e88e5; } svg.dag .status-failed rect { fill: #ffebee; stroke: #e53935; }
svg.dag text.name { font: 600 13px system-ui, sans-serif; } svg.dag text.detail { font: 12px system-ui, sans-serif; fill: #455a64; }
.charts { display: flex; flex-wrap: wrap; gap: 8px; }
svg.chart { background: #fbfcfc; border: 1px solid #eceff1; } svg.chart .series { stroke: #1e88e5; stroke-width: 1.5; }
svg.chart .grid { stroke: #eceff1; } svg.chart .tick { font: 10px system-ui, sans-serif; fill: #607d8b; }
svg.chart .chart-title { font: 600 12px system-ui, sans-serif; } svg.chart .last { font-weight: 400; fill: #607d8b; }
.group { display: inline-flex; align-items: flex-start; gap: 6px; margin: 0 8px 8px 0; padding: 6px; border: 1px solid #eceff1; vertical-align: top; }
.group .head { border-right: 2px solid #cfd8dc; padding-right: 8px; margin-right: 4px; }
figure { margin: 0; width: 72px; text-align: center; font-size: 11px; }
figure img { width: 64px; height: 64px; object-fit: contain; image-rendering: pixelated; background: #263238; display: block; margin: 0 auto; }
figure .missing { width: 64px; height: 64px; background: #eceff1; display: flex; align-items: center; justify-content: center; margin: 0 auto; }
"#;

/// The whole page for `data`; `version` is the dinoflow version that renders it.
pub fn page(data: &RunData, version: &str, generated: &str) -> Markup {
    let run = &data.run;
    let title = format!("dinoflow run {} · {}", run.id, run.workflow);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header id="summary" {
                    h1 { (title) " " (badge(&run.status)) }
                    p class="muted" {
                        "workflow file " code { (run.file) }
                        @if let Some(p) = &run.preset { " · preset " code { (p) } }
                        " · store " code { (run.store) }
                        br;
                        "started " (run.started) " · finished " (run.finished.as_deref().unwrap_or("-"))
                        " · " (data.stages.len()) " stages: "
                        (count(&data.stages, "ok")) " ran, " (count(&data.stages, "cached")) " cached"
                        @if count(&data.stages, "failed") > 0 { ", " (count(&data.stages, "failed")) " failed" }
                    }
                    @if let Some(e) = &run.error { pre class="error" { (e) } }
                    nav {
                        @for (id, name) in SECTIONS { a href=(format!("#{id}")) { (name) } }
                    }
                }
                section id="dag" {
                    h2 { "DAG" }
                    div class="scroll" { (svg::dag(&data.stages)) }
                    (stage_table(&data.stages))
                }
                section id="metrics" {
                    h2 { "Stage metrics" }
                    (metrics(&data.stages))
                }
                section id="funnel" {
                    h2 { "Funnel" }
                    p class="muted" { "Rows read and written by every stage, from the manifests in the store." }
                    table class="funnel" {
                        tr { th { "stage" } th { "status" } th { "rows in" } th { "rows out" } }
                        @for f in &data.funnel {
                            tr { td { (f.stage) } td { (badge(&f.status)) } td { (funnel::describe(&f.inputs)) } td { (funnel::describe(&f.outputs)) } }
                        }
                    }
                }
                section id="duplicates" {
                    h2 { "Duplicates" }
                    @if data.duplicates.is_empty() { (absent("dedup")) }
                    @for d in &data.duplicates { (duplicates(d)) }
                }
                section id="retrieval" {
                    h2 { "Retrieval" }
                    @if data.retrievals.is_empty() { (absent("retrieval")) }
                    @for r in &data.retrievals { (retrieval(r)) }
                }
                section id="training" {
                    h2 { "Training curves" }
                    @if data.curves.is_empty() { (absent("training")) }
                    @for c in &data.curves { (curves(c)) }
                }
                section id="evaluation" {
                    h2 { "Evaluation" }
                    @if data.evaluations.is_empty() { (absent("eval")) }
                    @for (stage, report) in &data.evaluations { (evaluation(stage, report)) }
                }
                section id="reproduce" {
                    h2 { "Reproduce" }
                    p { "Same workflow text, same data and the same dinoflow version give the same fingerprints, so every stage below is a cache hit:" }
                    pre { (reproduce_command(data)) }
                    h3 { "Fingerprints" }
                    table class="fingerprints" {
                        tr { th { "stage" } th { "kind" } th { "fingerprint" } }
                        @for s in &data.stages { tr { td { (s.row.stage) } td { (s.row.kind) "@" (s.row.version) } td { code { (s.row.fingerprint) } } } }
                    }
                    h3 { "Workflow YAML" }
                    @match &run.source {
                        Some(src) => pre class="workflow" { (src) },
                        None => p class="muted" { "This run was recorded before dinoflow kept the workflow text; see " code { (run.file) } "." },
                    }
                }
                footer class="muted" { "Rendered by dinoflow " (version) " at " (generated) " from the run database and the store." }
            }
        }
    }
}

/// The page's sections: (element id, title), in order.
pub const SECTIONS: [(&str, &str); 8] = [
    ("dag", "DAG"),
    ("metrics", "Stage metrics"),
    ("funnel", "Funnel"),
    ("duplicates", "Duplicates"),
    ("retrieval", "Retrieval"),
    ("training", "Training curves"),
    ("evaluation", "Evaluation"),
    ("reproduce", "Reproduce"),
];

/// What a section says when the run has no stage of `kind` with outputs in the store.
fn absent(kind: &str) -> Markup {
    html! { p class="muted" { "No " (kind) " stage in this run (or its outputs are no longer in the store)." } }
}

fn badge(status: &str) -> Markup {
    html! { span class=(format!("badge st-{status}")) { (status) } }
}

fn count(stages: &[StageView], status: &str) -> usize {
    stages.iter().filter(|s| s.row.status == status).count()
}

fn stage_table(stages: &[StageView]) -> Markup {
    html! {
        table class="stages" {
            tr { th { "stage" } th { "kind" } th { "status" } th { "time" } th { "inputs" } th { "started" } }
            @for s in stages {
                tr {
                    td { (s.row.stage) }
                    td { (s.row.kind) "@" (s.row.version) }
                    td { (badge(&s.row.status)) }
                    td class="num" {
                        (format!("{:.2} s", s.row.seconds.unwrap_or(0.0)))
                        @if let (Some(c), "cached") = (&s.computed, s.row.status.as_str()) {
                            br; span class="muted" { "computed in run " (c.run_id) ", " (format!("{:.1} s", c.seconds.unwrap_or(0.0))) }
                        }
                    }
                    td { @for (port, from, from_port) in &s.edges { code { (port) } " ← " (from) "." (from_port) br; } }
                    td class="muted" { (s.row.started) }
                }
                @if let Some(e) = &s.row.error { tr { td colspan="6" { pre class="error" { (e) } } } }
            }
        }
    }
}

fn metrics(stages: &[StageView]) -> Markup {
    html! {
        @for s in stages {
            @let (flat, from_run) = stage_metrics(s);
            @if !flat.is_empty() {
                div class="card" {
                h3 {
                    (s.row.stage) " " span class="muted" { (s.row.kind)
                    @if let Some(run) = from_run { " · recorded when run " (run) " computed it" } }
                }
                table class="kv" {
                    @for (k, v) in &flat { tr { td { code { (k) } } td class="num" { (v) } } }
                }
                }
            }
        }
    }
}

/// The metrics a stage recorded, flattened, and for a cached stage those of the run that computed
/// it (with that run's id).
fn stage_metrics(s: &StageView) -> (Vec<(String, String)>, Option<i64>) {
    match &s.computed {
        Some(c) if s.row.status == "cached" => (flatten(&c.metrics), Some(c.run_id)),
        _ => (flatten(&s.row.metrics), None),
    }
}

/// `a.b` → value text for every leaf of a JSON object (nothing for `null`).
fn flatten(value: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, child, out);
                }
            }
            serde_json::Value::Number(n) => out.push((
                prefix.to_string(),
                n.as_f64().map(svg::number).unwrap_or_else(|| n.to_string()),
            )),
            serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
            serde_json::Value::Null => {}
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}

fn figure(shown: &Shown, caption: &str) -> Markup {
    html! {
        figure title=(format!("{}\n{}", shown.thumb.as_ref().map_or("", |t| t.source.as_str()), shown.id)) {
            @match &shown.thumb {
                Some(t) => img src=(t.uri) alt=(format!("image {}", shown.id.chars().take(12).collect::<String>()));,
                None => div class="missing" { "not in store" },
            }
            figcaption { (caption) }
        }
    }
}

fn similarity(s: Option<f32>) -> String {
    s.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

/// Why a duplicate was removed: its similarity and what it measures.
fn removal_caption(m: &Shown) -> String {
    match &m.basis {
        Some(basis) => format!("{} {basis}", similarity(m.similarity)),
        None => similarity(m.similarity),
    }
}

fn duplicates(d: &DuplicateSection) -> Markup {
    html! {
        h3 { (d.stage) }
        p {
            (d.dropped) " rows dropped in "
            @for (i, (reason, n)) in d.groups_by_reason.iter().enumerate() {
                @if i > 0 { " and " }
                (n) " " (reason) " group" @if *n != 1 { "s" }
            }
            ". The largest groups: the representative (kept, or the evaluation image matched), then the dropped members with the similarity that decided and its basis (descriptor, mirrored, aligned pixels or component)."
        }
        @for g in &d.groups {
            div class=(format!("group dup-group reason-{}", g.reason)) {
                div class="head" { (figure(&g.representative, if g.reason == "evaluation" { "evaluation image" } else { "kept" })) }
                @for m in &g.members { (figure(m, &removal_caption(m))) }
                @if g.total_members > g.members.len() { span class="muted" { "+" (g.total_members - g.members.len()) " more" } }
            }
        }
    }
}

fn retrieval(r: &RetrievalSection) -> Markup {
    html! {
        h3 { (r.stage) }
        p { (r.rows) " rows retrieved by " (r.queries) " queries. The first queries, each with its best results and their cosine similarity:" }
        @for g in &r.groups {
            div class="group retrieval-group" {
                div class="head" {
                    @match &g.thumb {
                        Some(_) => (figure(&Shown { id: g.query.clone(), thumb: g.thumb.clone(), similarity: None, basis: None }, "seed")),
                        None => figure { div class="missing" { (g.query) } figcaption { "query" } },
                    }
                }
                @for m in &g.results { (figure(m, &similarity(m.similarity))) }
                @if g.total > g.results.len() { span class="muted" { "+" (g.total - g.results.len()) " more" } }
            }
        }
    }
}

fn curves(c: &Curves) -> Markup {
    html! {
        h3 { (c.stage) " " span class="muted" { (c.steps) " steps" } }
        div class="charts" {
            @for s in &c.series { (svg::line_chart(&s.name, &s.x, &s.y)) }
        }
    }
}

fn percent(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn evaluation(stage: &str, report: &dinoflow_eval::Report) -> Markup {
    let mut ks: Vec<&String> = report
        .rows
        .first()
        .map(|r| r.knn.top1.keys().collect())
        .unwrap_or_default();
    ks.sort_by_key(|k| k.parse::<u64>().unwrap_or(u64::MAX));
    html! {
        h3 { (stage) }
        p { "Top-1 accuracy on " (report.test_rows) " test images (" (report.train_rows) " train images, " (report.classes) " classes): weighted k-NN and a linear probe on frozen features, with the baselines." }
        table class="evaluation" {
            tr {
                th { "model" } th { "source" } th { "architecture" }
                @for k in &ks { th { "k-NN k=" (k) } }
                th { "linear" } th { "linear head" }
            }
            @for r in &report.rows {
                tr class=(format!("source-{}", r.source.as_str())) {
                    td { (r.name) } td { (r.source.as_str()) } td { (r.architecture.as_deref().unwrap_or("-")) }
                    @for k in &ks { td class="num" { (r.knn.top1.get(*k).map(|v| percent(*v)).unwrap_or_else(|| "-".into())) } }
                    td class="num" { (percent(r.linear.top1)) }
                    td { (r.linear.describe()) }
                }
            }
        }
    }
}

/// The command that runs the workflow again, quoted for a POSIX shell.
fn reproduce_command(data: &RunData) -> String {
    let mut words = vec![
        "dinoflow",
        "run",
        &data.run.file,
        "--store",
        &data.run.store,
    ];
    if let Some(p) = &data.run.preset {
        words.extend(["--preset", p]);
    }
    shlex::try_join(words).unwrap_or_else(|_| "(the workflow path holds a NUL byte)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_flatten_to_dotted_keys() {
        let flat = flatten(
            &serde_json::json!({"rows": 12, "loss": {"first": 1.5, "last": 0.25}, "device": "cpu"}),
        );
        assert_eq!(
            flat,
            vec![
                ("device".to_string(), "cpu".to_string()),
                ("loss.first".to_string(), "1.5".to_string()),
                ("loss.last".to_string(), "0.25".to_string()),
                ("rows".to_string(), "12".to_string()),
            ]
        );
    }
}
