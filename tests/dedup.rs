//! The dedup stage on real photos with injected near-duplicates whose ground truth the test itself
//! knows (it made them): recall and precision of self-dedup with the built-in descriptor and the
//! stage's defaults, mirrored and bordered copies, relative dedup removing every copy of an
//! evaluation image, and the refusals (too much removed, embeddings that cannot tell images
//! apart).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{fingerprint, open_rgb, photos, python_json, repo_root, run_workflow, stage_report};
use image::ImageFormat;
use image::imageops::FilterType;

/// Photo pairs that are the same scene (consecutive video frames, stereo and calibration shots):
/// a descriptor is right to call them copies. Checked by eye; see plugins/embed/tests/near_duplicates.rs.
const NATURAL_PAIRS: &[(&str, &str)] = &[
    ("rubberwhale1", "rubberwhale2"),
    ("basketball1", "basketball2"),
    ("left11", "left14"),
    ("right11", "right14"),
    ("left08", "left12"),
    ("aloeL", "aloeR"),
    // Two renders of one model from slightly different viewpoints: once their plain backgrounds
    // are trimmed, the global descriptor cannot tell them apart.
    ("Blender_Suzanne1", "Blender_Suzanne2"),
];

fn stem(source: &str) -> String {
    let name = source.rsplit('/').next().unwrap_or(source);
    name.split('.').next().unwrap_or(name).to_string()
}

/// The original a file name derives from: `copy-KIND-ORIGINAL.ext` → ORIGINAL.
fn original_of(source: &str) -> String {
    let s = stem(source);
    match s.strip_prefix("copy-") {
        Some(rest) => rest
            .split_once('-')
            .map(|(_, o)| o.to_string())
            .unwrap_or(rest.into()),
        None => s,
    }
}

fn natural_group(name: &str) -> String {
    NATURAL_PAIRS
        .iter()
        .find(|(a, b)| *a == name || *b == name)
        .map(|(a, _)| a.to_string())
        .unwrap_or_else(|| name.to_string())
}

/// Writes the pool: every photo, plus 4 edited copies of each of the first `copied` photos.
/// Returns the originals that got copies.
fn make_pool(pool: &Path, copied: usize) -> Vec<String> {
    let files = photos();
    std::fs::create_dir_all(pool).unwrap();
    let mut with_copies = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let name = path.file_name().unwrap().to_str().unwrap();
        std::fs::copy(path, pool.join(name)).unwrap();
        if i >= copied {
            continue;
        }
        let s = stem(name);
        let img = open_rgb(path);
        // Exact byte copy, JPEG re-encode, 70 % resize, 5 % crop per side.
        std::fs::copy(path, pool.join(format!("copy-exact-{s}.bin"))).unwrap();
        img.save_with_format(pool.join(format!("copy-jpeg-{s}.jpg")), ImageFormat::Jpeg)
            .unwrap();
        let (w, h) = (img.width(), img.height());
        img.resize_exact(w * 7 / 10, h * 7 / 10, FilterType::Triangle)
            .save_with_format(pool.join(format!("copy-resize-{s}.png")), ImageFormat::Png)
            .unwrap();
        let (x, y) = (w / 20, h / 20);
        img.crop_imm(x, y, w - 2 * x, h - 2 * y)
            .save_with_format(pool.join(format!("copy-crop-{s}.png")), ImageFormat::Png)
            .unwrap();
        with_copies.push(s);
    }
    with_copies
}

/// Asserts that no dedup output was committed to `store` (a failed dedup writes nothing).
fn assert_no_dedup_output(store: &Path) {
    let Ok(objects) = std::fs::read_dir(store.join("objects")) else {
        return;
    };
    for entry in objects {
        let manifest = entry.unwrap().path().join("manifest.json");
        let text = std::fs::read_to_string(&manifest).unwrap_or_default();
        assert!(
            !text.contains("\"duplicates\""),
            "the failed dedup committed outputs: {}",
            manifest.display()
        );
    }
}

fn read_duplicates(store: &Path, fingerprint: &str) -> Vec<BTreeMap<String, serde_json::Value>> {
    let script = "import json,sys,pyarrow.parquet as pq\nfrom pathlib import Path\no=Path(sys.argv[1])/'objects'/sys.argv[2]\nm=json.loads((o/'manifest.json').read_text())\nfiles=[str(o/f['path']) for f in m['outputs']['duplicates']['files']]\nprint(json.dumps(pq.ParquetDataset(files).read().to_pylist() if files else []))";
    serde_json::from_value(python_json(&[
        "-c",
        script,
        store.to_str().unwrap(),
        fingerprint,
    ]))
    .unwrap()
}

#[test]
fn dedup_finds_injected_copies_and_drops_what_touches_the_evaluation_set() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    let copied = make_pool(&pool, 40);
    // The evaluation set: 8 of the photos that have copies in the pool.
    let eval = dir.path().join("eval");
    std::fs::create_dir_all(&eval).unwrap();
    let evaluated: Vec<String> = copied.iter().take(8).cloned().collect();
    for entry in std::fs::read_dir(repo_root().join("data/photos")).unwrap() {
        let p = entry.unwrap().path();
        if evaluated.contains(&stem(p.to_str().unwrap())) {
            std::fs::copy(&p, eval.join(p.file_name().unwrap())).unwrap();
        }
    }
    let yaml = format!(
        "name: d\nstages:\n  pool:\n    kind: ingest\n    with: {{source: {{folder: {{path: {}}}}}, max_side: 224}}\n  eval:\n    kind: ingest\n    with: {{source: {{folder: {{path: {}}}}}, max_side: 224}}\n  pool_vectors:\n    kind: embed\n    inputs: {{images: pool}}\n  eval_vectors:\n    kind: embed\n    inputs: {{images: eval}}\n  self_dedup:\n    kind: dedup\n    inputs: {{images: pool, embeddings: pool_vectors}}\n    with: {{max_removed: 0.8}}\n  relative_dedup:\n    kind: dedup\n    inputs: {{images: pool, embeddings: pool_vectors, against: eval_vectors}}\n    with: {{against_threshold: 0.85, max_removed: 0.8}}\n",
        pool.display(),
        eval.display()
    );
    let report = run_workflow(dir.path(), &yaml);
    let store = dir.path().join("store");
    let fp = |name: &str| fingerprint(&report, name);

    // Self-dedup: every injected copy is dropped (recall), and every dropped row is a copy of its
    // representative's original or of its natural twin (precision).
    let dups = read_duplicates(&store, &fp("self_dedup"));
    let injected = 4 * copied.len();
    let by_id: BTreeMap<String, String> = dups
        .iter()
        .map(|d| {
            (
                d["source"].as_str().unwrap().to_string(),
                d["representative"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let ids = {
        // id → source of the pool rows, to name representatives.
        let script = "import json,sys,pyarrow.parquet as pq\nfrom pathlib import Path\no=Path(sys.argv[1])/'objects'/sys.argv[2]\nm=json.loads((o/'manifest.json').read_text())\nt=pq.ParquetDataset([str(o/f['path']) for f in m['outputs']['images']['files']]).read()\nprint(json.dumps(dict(zip(t.column('id').to_pylist(), t.column('source').to_pylist()))))";
        serde_json::from_value::<BTreeMap<String, String>>(python_json(&[
            "-c",
            script,
            store.to_str().unwrap(),
            &fp("pool"),
        ]))
        .unwrap()
    };
    let correct = by_id
        .iter()
        .filter(|(source, rep)| {
            let rep_source = &ids[*rep];
            natural_group(&original_of(source)) == natural_group(&original_of(rep_source))
        })
        .count();
    // Recall: from each original and its 4 copies, 4 rows are dropped (whichever is kept).
    let mut dropped_per_group: BTreeMap<String, usize> = BTreeMap::new();
    for source in by_id.keys() {
        *dropped_per_group.entry(original_of(source)).or_default() += 1;
    }
    let found: usize = copied
        .iter()
        .map(|o| dropped_per_group.get(o).copied().unwrap_or(0).min(4))
        .sum();
    let recall = found as f64 / injected as f64;
    let wrong: Vec<(&String, &String)> = by_id
        .iter()
        .filter(|(source, rep)| {
            natural_group(&original_of(source)) != natural_group(&original_of(&ids[*rep]))
        })
        .map(|(s, r)| (s, &ids[r]))
        .collect();
    eprintln!("dropped with a representative of another photo: {wrong:?}");
    let precision = correct as f64 / by_id.len().max(1) as f64;
    eprintln!(
        "self-dedup: {} dropped, {found}/{injected} injected copies (recall {recall:.3}), precision {precision:.3}",
        by_id.len()
    );
    assert!(recall >= 0.95, "recall {recall}");
    assert!(precision >= 0.99, "precision {precision}");

    // Relative dedup: every row whose original is an evaluation image is dropped as `evaluation`.
    let dups = read_duplicates(&store, &fp("relative_dedup"));
    let evaluation: BTreeSet<String> = dups
        .iter()
        .filter(|d| d["reason"] == "evaluation")
        .map(|d| d["source"].as_str().unwrap().to_string())
        .collect();
    for source in ids.values() {
        if evaluated.contains(&original_of(source)) {
            assert!(
                evaluation.contains(source),
                "{source} is a copy of an evaluation image but was kept"
            );
        }
    }
    eprintln!(
        "relative dedup: {} rows dropped as evaluation overlap",
        evaluation.len()
    );
}

#[test]
fn a_pool_of_one_image_is_kept_alone_and_dropped_against_itself() {
    let dir = tempfile::tempdir().unwrap();
    let photos = repo_root().join("data/photos");
    let yaml = format!(
        "name: one\nstages:\n  pool:\n    kind: ingest\n    with: {{source: {{folder: {{path: {}}}}}, limit: 1}}\n  vectors:\n    kind: embed\n    inputs: {{images: pool}}\n  alone:\n    kind: dedup\n    inputs: {{images: pool, embeddings: vectors}}\n  dedup:\n    kind: dedup\n    inputs: {{images: pool, embeddings: vectors, against: vectors}}\n",
        photos.display()
    );
    let report = run_workflow(dir.path(), &yaml);
    let stage = |name: &str| stage_report(&report, name).clone();
    let alone = stage("alone");
    assert_eq!(alone["rows"]["kept"], 1, "{alone}");
    let dedup = stage("dedup");
    // Against itself the one image is an evaluation image: dropped; nothing else to keep.
    assert_eq!(dedup["rows"]["kept"], 0, "{dedup}");
    assert_eq!(dedup["rows"]["duplicates"], 1, "{dedup}");
}

#[test]
fn verification_against_an_evaluation_set_needs_its_images() {
    let dir = tempfile::tempdir().unwrap();
    let photos = repo_root().join("data/photos");
    let stages = |dedup_inputs: &str| {
        format!(
            "name: verify\nstages:\n  pool:\n    kind: ingest\n    with: {{source: {{folder: {{path: {}}}}}, limit: 3}}\n  vectors:\n    kind: embed\n    inputs: {{images: pool}}\n  dedup:\n    kind: dedup\n    inputs: {{images: pool, embeddings: vectors, against: vectors{dedup_inputs}}}\n    with: {{verify: {{}}}}\n",
            photos.display()
        )
    };
    let store = dir.path().join("store");
    let wf = common::write_workflow(dir.path(), "wf.yaml", &stages(""));
    let out = common::run(&["run", &wf, "--store", store.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ran without the evaluation images");
    assert!(
        err.contains("dedup") && err.contains("connect `against_images`"),
        "{err}"
    );
    assert_no_dedup_output(&store);

    // With them connected, each image is its own evaluation copy (and aligns with itself).
    let report = run_workflow(dir.path(), &stages(", against_images: pool"));
    let dedup = stage_report(&report, "dedup");
    assert_eq!(dedup["rows"]["kept"], 0, "{dedup}");
    assert_eq!(dedup["rows"]["duplicates"], 3, "{dedup}");
}

/// The id → source map of an images output.
fn sources(store: &Path, fingerprint: &str, port: &str) -> BTreeMap<String, String> {
    let script = "import json,sys,pyarrow.parquet as pq\nfrom pathlib import Path\no=Path(sys.argv[1])/'objects'/sys.argv[2]\nm=json.loads((o/'manifest.json').read_text())\nfiles=[str(o/f['path']) for f in m['outputs'][sys.argv[3]]['files']]\nt=pq.ParquetDataset(files).read() if files else None\nprint(json.dumps(dict(zip(t.column('id').to_pylist(), t.column('source').to_pylist())) if t is not None else {}))";
    serde_json::from_value(python_json(&[
        "-c",
        script,
        store.to_str().unwrap(),
        fingerprint,
        port,
    ]))
    .unwrap()
}

/// Pads `img` with a uniform frame of `colour`, `fraction` of each side wide.
fn framed(img: &image::DynamicImage, fraction: f64, colour: [u8; 3]) -> image::RgbImage {
    let (w, h) = (img.width(), img.height());
    let (bx, by) = (
        (f64::from(w) * fraction) as u32,
        (f64::from(h) * fraction) as u32,
    );
    let mut out = image::RgbImage::from_pixel(w + 2 * bx, h + 2 * by, image::Rgb(colour));
    image::imageops::overlay(&mut out, &img.to_rgb8(), i64::from(bx), i64::from(by));
    out
}

const DEDUP_WORKFLOW: &str = "name: d\nstages:\n  pool:\n    kind: ingest\n    with: {source: {folder: {path: POOL}}, max_side: 224}\n  vectors:\n    kind: embed\n    inputs: {images: pool}\n  dedup:\n    kind: dedup\n    inputs: {images: pool, embeddings: vectors}\n    with: WITH\n";

#[test]
fn mirrored_and_bordered_copies_are_found_with_the_defaults_and_named_in_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    std::fs::create_dir_all(&pool).unwrap();
    // 30 photos; each of the first 12 gets a mirrored copy and a framed copy (a white, black or
    // grey border of 8-15 % per side), re-encoded as JPEG.
    let colours = [[255, 255, 255], [0, 0, 0], [128, 128, 128]];
    let mut copies = Vec::new();
    for (i, path) in photos().iter().take(30).enumerate() {
        std::fs::copy(path, pool.join(path.file_name().unwrap())).unwrap();
        if i >= 12 {
            continue;
        }
        let s = stem(path.to_str().unwrap());
        let img = open_rgb(path);
        let mirrored = format!("copy-mirror-{s}.jpg");
        img.fliph()
            .save_with_format(pool.join(&mirrored), ImageFormat::Jpeg)
            .unwrap();
        let border = format!("copy-border-{s}.jpg");
        framed(&img, 0.08 + 0.01 * (i % 8) as f64, colours[i % 3])
            .save_with_format(pool.join(&border), ImageFormat::Jpeg)
            .unwrap();
        copies.extend([mirrored, border]);
    }
    let yaml = DEDUP_WORKFLOW
        .replace("POOL", pool.to_str().unwrap())
        .replace("WITH", "{}");
    let report = run_workflow(dir.path(), &yaml);
    let store = dir.path().join("store");
    let ids = sources(&store, &fingerprint(&report, "pool"), "images");
    let dups = read_duplicates(&store, &fingerprint(&report, "dedup"));
    let removed: BTreeMap<String, (String, String)> = dups
        .iter()
        .map(|d| {
            (
                stem(d["source"].as_str().unwrap()),
                (
                    stem(&ids[d["representative"].as_str().unwrap()]),
                    d["basis"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    eprintln!("removed: {removed:?}");
    // The row kept for each row (itself when kept).
    let kept_for = |s: &str| {
        removed
            .get(s)
            .map(|(rep, _)| rep.clone())
            .unwrap_or(s.to_string())
    };
    for copy in &copies {
        let copy = stem(copy);
        let original = original_of(&copy);
        // Found: the copy and its original end with the same kept row. The framed copy has the
        // most pixels, so `keep: largest` may keep it and remove the original.
        let (a, b) = (kept_for(&copy), kept_for(&original));
        assert!(
            a == b || natural_group(&original_of(&a)) == natural_group(&original_of(&b)),
            "{copy} ended with {a}, its original {original} with {b}"
        );
        if let Some((_, basis)) = removed.get(&copy) {
            // A nearly symmetric photo scores about as high in both orientations.
            assert!(
                ["mirrored", "descriptor"].contains(&basis.as_str()),
                "{copy}: {basis}"
            );
        }
    }
    // The basis of the link between a copy and its original, whichever of them was removed.
    let named = |kind: &str, basis: &str| {
        copies
            .iter()
            .filter(|c| c.starts_with(kind))
            .filter(|c| {
                let c = stem(c);
                [c.clone(), original_of(&c)]
                    .iter()
                    .any(|s| removed.get(s).is_some_and(|(_, b)| b == basis))
            })
            .count()
    };
    assert!(named("copy-mirror-", "mirrored") >= 9, "{removed:?}");
    assert!(named("copy-border-", "descriptor") >= 9, "{removed:?}");
    for (source, (rep, _)) in &removed {
        assert_eq!(
            natural_group(&original_of(source)),
            natural_group(&original_of(rep)),
            "{source} is not a copy of {rep}"
        );
    }
    // Every removal says why: a reason, a basis and the similarity to its representative.
    for d in &dups {
        assert_eq!(d["reason"], "duplicate", "{d:?}");
        assert!(d["similarity"].as_f64().unwrap() > 0.93, "{d:?}");
    }
}

#[test]
fn a_dedup_that_would_remove_most_of_the_pool_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    std::fs::create_dir_all(&pool).unwrap();
    // 5 unrelated photos, each with two re-encoded copies: 10 of 15 rows are copies (67 % > 50 %).
    let chosen = ["apple", "baboon", "board", "building", "butterfly"];
    for path in photos()
        .iter()
        .filter(|p| chosen.contains(&stem(p.to_str().unwrap()).as_str()))
    {
        let s = stem(path.to_str().unwrap());
        let img = open_rgb(path);
        std::fs::copy(path, pool.join(path.file_name().unwrap())).unwrap();
        for q in [60u8, 80] {
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, q)
                .encode_image(&img)
                .unwrap();
            std::fs::write(pool.join(format!("copy-q{q}-{s}.jpg")), bytes).unwrap();
        }
    }
    let yaml = |with: &str| {
        DEDUP_WORKFLOW
            .replace("POOL", pool.to_str().unwrap())
            .replace("WITH", with)
    };
    let store = dir.path().join("store");
    let wf = common::write_workflow(dir.path(), "wf.yaml", &yaml("{}"));
    let text = common::run_failed(&wf, &store);
    assert!(
        text.contains("would remove 10 of 15 images") && text.contains("max_removed"),
        "{text}"
    );
    assert_no_dedup_output(&store);
    // Told that the pool is mostly copies, it removes them.
    let report = run_workflow(dir.path(), &yaml("{max_removed: 0.7}"));
    let dedup = stage_report(&report, "dedup");
    assert_eq!(dedup["rows"]["kept"], 5, "{dedup}");
}

#[test]
fn embeddings_of_a_randomly_initialised_vit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: random\nstages:\n  pool:\n    kind: ingest\n    with: {{source: {{folder: {{path: {}}}}}, limit: 12, max_side: 64}}\n  vectors:\n    kind: embed\n    inputs: {{images: pool}}\n    with: {{model: {{vit: {{preset: tiny-28}}}}}}\n  dedup:\n    kind: dedup\n    inputs: {{images: pool, embeddings: vectors}}\n",
        repo_root().join("data/photos").display()
    );
    let store = dir.path().join("store");
    let wf = common::write_workflow(dir.path(), "wf.yaml", &yaml);
    let text = common::run_failed(&wf, &store);
    assert!(
        text.contains("dedup") && text.contains("do not tell images apart"),
        "{text}"
    );
}
