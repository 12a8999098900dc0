//! The stage's output, `eval/report.json`, and its plain-text table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The file of the `report` artifact.
pub const REPORT_FILE: &str = "eval/report.json";

/// Everything the eval stage measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Rows of the `train` input.
    pub train_rows: u64,
    /// Rows of the `test` input.
    pub test_rows: u64,
    /// Distinct labels over train and test.
    pub classes: u64,
    /// The k of [`KnnResult::reported`].
    pub report_k: usize,
    /// One row per evaluated model: the inputs (label order), then the random-init baselines,
    /// then raw pixels.
    pub rows: Vec<ReportRow>,
}

/// Where an evaluated feature extractor comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A model connected to the `model` input.
    Input,
    /// The images' pixels.
    RawPixels,
    /// An input architecture at random initialisation.
    RandomInit,
}

impl Source {
    /// The serialised name (`input`, `raw_pixels`, `random_init`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::RawPixels => "raw_pixels",
            Self::RandomInit => "random_init",
        }
    }
}

/// One evaluated model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    /// The input's label, `raw pixels` or `random init (<label>)`.
    pub name: String,
    /// Where it comes from.
    pub source: Source,
    /// A short description of the ViT (`ViT D192×12 p4`); none for raw pixels.
    pub architecture: Option<String>,
    /// The k-NN classifier's results.
    pub knn: KnnResult,
    /// The chosen linear head's results.
    pub linear: LinearResult,
}

/// Top-1 accuracies of the weighted k-NN classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnResult {
    /// Test top-1 accuracy (a fraction) for each configured k (the key, as text).
    pub top1: BTreeMap<String, f64>,
    /// The accuracy at the report's `report_k`.
    pub reported: f64,
}

/// The linear head chosen on the held-out train rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearResult {
    /// Its test top-1 accuracy (a fraction).
    pub top1: f64,
    /// Its top-1 on the held-out train rows, which chose it.
    pub val_top1: f64,
    /// Last blocks whose cls tokens it reads (0 for raw pixels).
    pub layers: usize,
    /// Whether it also reads the last block's average patch token.
    pub avgpool: bool,
    /// Its learning rate as configured (before the batch / 256 scaling).
    pub lr: f64,
}

impl LinearResult {
    /// What the head reads and its learning rate: `4 cls + avgpool, lr 0.001` or `pixels, lr 0.01`.
    pub fn describe(&self) -> String {
        let input = match (self.layers, self.avgpool) {
            (0, _) => "pixels".to_string(),
            (n, false) => format!("{n} cls"),
            (n, true) => format!("{n} cls + avgpool"),
        };
        format!("{input}, lr {}", self.lr)
    }
}

/// The report's rows as a plain-text table (a header, a rule, one line per row): name, source,
/// k-NN top-1 at `report_k`, linear top-1 and the chosen head, percentages with one decimal. The
/// row counts and classes are left to the caller.
pub fn render_table(report: &Report) -> String {
    let header = [
        "name".to_string(),
        "source".to_string(),
        format!("kNN top-1 (k={})", report.report_k),
        "linear top-1".to_string(),
        "linear head".to_string(),
    ];
    let rows: Vec<[String; 5]> = report
        .rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.source.as_str().to_string(),
                percent(r.knn.reported),
                percent(r.linear.top1),
                r.linear.describe(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..5)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Text columns are left-aligned, the two accuracies right-aligned.
    let line = |cells: &[String; 5]| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                let pad = " ".repeat(widths[c] - cell.chars().count());
                if c == 2 || c == 3 {
                    format!("{pad}{cell}")
                } else {
                    format!("{cell}{pad}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(&header)];
    out.push(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    out.extend(rows.iter().map(line));
    out.join("\n") + "\n"
}

fn percent(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, source: Source, knn: f64, linear: f64, layers: usize) -> ReportRow {
        ReportRow {
            name: name.into(),
            source,
            architecture: None,
            knn: KnnResult {
                top1: BTreeMap::from([("20".to_string(), knn)]),
                reported: knn,
            },
            linear: LinearResult {
                top1: linear,
                val_top1: linear,
                layers,
                avgpool: layers == 4,
                lr: 0.001,
            },
        }
    }

    #[test]
    fn table_is_aligned_with_one_decimal_percentages() {
        let report = Report {
            train_rows: 100,
            test_rows: 50,
            classes: 10,
            report_k: 20,
            rows: vec![
                row("teacher", Source::Input, 0.8123, 0.85, 4),
                row("raw pixels", Source::RawPixels, 0.7, 0.0456, 0),
            ],
        };
        let table = render_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[0].starts_with("name        source      kNN top-1 (k=20)"),
            "{table}"
        );
        assert!(
            lines[2].contains("81.2%") && lines[2].contains("85.0%"),
            "{table}"
        );
        assert!(lines[2].ends_with("4 cls + avgpool, lr 0.001"), "{table}");
        assert!(
            lines[3].contains("raw_pixels") && lines[3].contains(" 4.6%"),
            "{table}"
        );
        assert!(lines[3].ends_with("pixels, lr 0.001"), "{table}");
        // The accuracy columns end at the same place on every line.
        let end = lines[0].find("linear top-1").unwrap() + "linear top-1".len();
        assert_eq!(&lines[2][end - 5..end], "85.0%");
        assert_eq!(&lines[3][end - 4..end], "4.6%");
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"source\":\"raw_pixels\""), "{json}");
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
    }
}
