//! Inline SVG for the report: the run's DAG coloured by status, and line charts of training curves.

use std::collections::HashMap;

use maud::{Markup, PreEscaped, html};

use super::gather::StageView;

const NODE_W: f64 = 170.0;
const NODE_H: f64 = 46.0;
const GAP_X: f64 = 24.0;
const GAP_Y: f64 = 40.0;
const PAD: f64 = 8.0;

/// The stages as boxes in rows by depth (sources on top), edges from output to input, each box
/// coloured by status and labelled with its kind and time or `cached`.
pub fn dag(stages: &[StageView]) -> Markup {
    let index: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.row.stage.as_str(), i))
        .collect();
    let upstream: Vec<Vec<usize>> = stages
        .iter()
        .map(|s| {
            s.edges
                .iter()
                .filter_map(|(_, from, _)| index.get(from.as_str()).copied())
                .collect()
        })
        .collect();
    // Longest path from a source; at most one pass per stage (the graph is acyclic).
    let mut depth = vec![0usize; stages.len()];
    for _ in 0..stages.len() {
        let mut changed = false;
        for i in 0..stages.len() {
            let d = upstream[i].iter().map(|&u| depth[u] + 1).max().unwrap_or(0);
            if d > depth[i] {
                depth[i] = d;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut slot = vec![0usize; stages.len()];
    let mut per_row: HashMap<usize, usize> = HashMap::new();
    for i in 0..stages.len() {
        let n = per_row.entry(depth[i]).or_default();
        slot[i] = *n;
        *n += 1;
    }
    let rows = depth.iter().max().map_or(0, |d| d + 1);
    let columns = per_row.values().max().copied().unwrap_or(0);
    let width = PAD * 2.0 + columns as f64 * NODE_W + columns.saturating_sub(1) as f64 * GAP_X;
    let height = PAD * 2.0 + rows as f64 * NODE_H + rows.saturating_sub(1) as f64 * GAP_Y;
    let at = |i: usize| {
        (
            PAD + slot[i] as f64 * (NODE_W + GAP_X),
            PAD + depth[i] as f64 * (NODE_H + GAP_Y),
        )
    };
    html! {
        svg class="dag" xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="workflow DAG" {
            defs {
                marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"
                    markerHeight="7" orient="auto-start-reverse" {
                    path d="M 0 0 L 10 5 L 0 10 z" fill="#78909c" {}
                }
            }
            @for (i, ups) in upstream.iter().enumerate() {
                @for &u in ups {
                    @let (x1, y1) = at(u);
                    @let (x2, y2) = at(i);
                    @let (x1, y1, x2, y2) = (x1 + NODE_W / 2.0, y1 + NODE_H, x2 + NODE_W / 2.0, y2);
                    path class="edge" fill="none" stroke="#90a4ae" stroke-width="1.2"
                        marker-end="url(#arrow)"
                        d=(format!("M {x1} {y1} C {x1} {}, {x2} {}, {x2} {y2}", y1 + GAP_Y / 2.0, y2 - GAP_Y / 2.0)) {}
                }
            }
            @for (i, s) in stages.iter().enumerate() {
                @let (x, y) = at(i);
                g class=(format!("node status-{}", s.row.status)) transform=(format!("translate({x} {y})")) {
                    title { (s.row.stage) " (" (s.row.kind) "@" (s.row.version) "): " (s.row.status) ", fingerprint " (s.row.fingerprint) }
                    rect width=(NODE_W) height=(NODE_H) rx="6" {}
                    text x="8" y="18" class="name" { (clip(&s.row.stage, 22)) }
                    text x="8" y="36" class="detail" { (s.row.kind) " · " (status_text(s)) }
                }
            }
        }
    }
}

/// `3.2 s`, `cached`, `failed` …: what the DAG box says about a stage.
pub fn status_text(s: &StageView) -> String {
    match (s.row.status.as_str(), s.row.seconds) {
        ("ok", Some(secs)) => format!("{secs:.1} s"),
        (status, _) => status.to_string(),
    }
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

const CHART_W: f64 = 300.0;
const CHART_H: f64 = 170.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 22.0;

/// A line chart of `y` over `x` with its title, the y range and the x range as labels. Points that
/// are not finite are left out.
pub fn line_chart(title: &str, x: &[f64], y: &[f64]) -> Markup {
    let points: Vec<(f64, f64)> = x
        .iter()
        .zip(y)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(a, b)| (*a, *b))
        .collect();
    let (x0, x1) = range(points.iter().map(|p| p.0));
    let (y0, y1) = range(points.iter().map(|p| p.1));
    let plot_w = CHART_W - LEFT - RIGHT;
    let plot_h = CHART_H - TOP - BOTTOM;
    let sx = |v: f64| LEFT + (v - x0) / (x1 - x0) * plot_w;
    let sy = |v: f64| TOP + (1.0 - (v - y0) / (y1 - y0)) * plot_h;
    let line: Vec<String> = points
        .iter()
        .map(|&(a, b)| format!("{:.1},{:.1}", sx(a), sy(b)))
        .collect();
    let last = points.last().map(|p| p.1);
    html! {
        svg class="chart" xmlns="http://www.w3.org/2000/svg" width=(CHART_W) height=(CHART_H)
            viewBox=(format!("0 0 {CHART_W} {CHART_H}")) role="img" aria-label=(title) {
            title { (title) }
            text x=(LEFT) y="14" class="chart-title" { (title) @if let Some(v) = last { tspan class="last" { "  last " (number(v)) } } }
            @for v in [y0, (y0 + y1) / 2.0, y1] {
                line x1=(LEFT) x2=(CHART_W - RIGHT) y1=(sy(v)) y2=(sy(v)) class="grid" {}
                text x=(LEFT - 4.0) y=(sy(v) + 4.0) text-anchor="end" class="tick" { (number(v)) }
            }
            text x=(LEFT) y=(CHART_H - 6.0) class="tick" { (number(x0)) }
            text x=(CHART_W - RIGHT) y=(CHART_H - 6.0) text-anchor="end" class="tick" { "step " (number(x1)) }
            @if points.is_empty() {
                text x=(LEFT + 10.0) y=(TOP + plot_h / 2.0) class="tick" { "no finite values" }
            } @else {
                polyline class="series" fill="none" points=(PreEscaped(line.join(" "))) {}
            }
        }
    }
}

/// The finite range of `values`, widened when empty or flat so that it can be divided by.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo > f64::EPSILON * hi.abs().max(1.0) {
        return (lo, hi);
    }
    let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.05 };
    (lo - pad, hi + pad)
}

/// A number in at most 4 significant digits, scientific when very large or small.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        let s = s.trim_end_matches('0');
        s.trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(12.5), "12.5");
        assert_eq!(number(0.04), "0.04");
        assert_eq!(number(1234.4), "1234");
        assert_eq!(number(0.0004), "4.00e-4");
        assert_eq!(number(-2.0), "-2");
    }

    #[test]
    fn flat_and_empty_ranges_are_widened() {
        assert_eq!(range([2.0, 2.0].into_iter()), (1.9, 2.1));
        assert_eq!(range([0.0].into_iter()), (-1.0, 1.0));
        assert_eq!(range(std::iter::empty()), (0.0, 1.0));
        assert_eq!(range([3.0, 1.0, 2.0].into_iter()), (1.0, 3.0));
    }

    #[test]
    fn charts_skip_values_that_are_not_finite() {
        let svg = line_chart("loss", &[0.0, 1.0, 2.0], &[1.0, f64::NAN, 3.0]).into_string();
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 2, "{svg}");
        let empty = line_chart("loss", &[0.0], &[f64::NAN]).into_string();
        assert!(empty.contains("no finite values"), "{empty}");
    }
}
