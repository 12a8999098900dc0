//! The store on S3: a local S3-compatible server (moto, from PyPI) stands in for AWS. The curation
//! part of a workflow (ingest → WebAssembly filter → embed → dedup) run with `--store
//! s3://bucket/prefix` gives the same output digests as with a local folder, and a cached re-run
//! writes nothing to the bucket.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{dinoflow, json, python_json, repo_root, write_workflow};

/// A moto S3 server on a free port, stopped when dropped.
struct S3Server {
    child: Child,
    _workdir: tempfile::TempDir,
    endpoint: String,
}

impl S3Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = repo_root().join(".venv/bin/moto_server");
        assert!(
            server.exists(),
            "{} is missing: run `make setup`",
            server.display()
        );
        // The server writes its request recording into its working folder.
        let workdir = tempfile::tempdir().unwrap();
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(workdir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            _workdir: workdir,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    fn bucket(&self, action: &str, bucket: &str) -> serde_json::Value {
        python_json(&[
            repo_root().join("tests/s3_bucket.py").to_str().unwrap(),
            &self.endpoint,
            action,
            bucket,
        ])
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dinoflow ARGS` in `dir` (where the run database of a remote store lives) with the S3
/// settings of `server`.
fn dinoflow_s3(server: &S3Server, dir: &Path, args: &[&str]) -> Output {
    dinoflow()
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_CONDITIONAL_PUT", "etag")
        .args(args)
        .output()
        .unwrap()
}

/// Stage name → (fingerprint, output port → digest), from `dinoflow --json show STAGE`.
fn digests(
    run: impl Fn(&[&str]) -> Output,
    report: &serde_json::Value,
) -> Vec<(String, String, serde_json::Value)> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap();
            let shown = json(&run(&["--json", "show", name]));
            let outputs: serde_json::Map<String, serde_json::Value> = shown["outputs"]["outputs"]
                .as_object()
                .unwrap_or_else(|| panic!("{name}: no outputs in {shown}"))
                .iter()
                .map(|(port, o)| (port.clone(), o["digest"].clone()))
                .collect();
            (
                name.to_string(),
                s["fingerprint"].as_str().unwrap().to_string(),
                outputs.into(),
            )
        })
        .collect()
}

#[test]
fn a_workflow_on_s3_matches_the_local_store_and_a_cached_rerun_writes_nothing() {
    let server = S3Server::start();
    server.bucket("create", "dinoflow-test");
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    let wf = write_workflow(
        dir.path(),
        "wf.yaml",
        &format!(
            "name: s3-curation
stages:
  photos:
    kind: ingest@1
    with: {{source: {{folder: {{path: {root}/data/photos}}}}, max_side: 96, limit: 30, shard_rows: 8}}
  informative:
    kind: filter@1
    inputs: {{images: photos}}
    with: {{plugins: [{{wasm: {root}/plugins/filters/dist/blank.wasm, params: {{min_std: 5}}}}]}}
  vectors:
    kind: embed@1
    inputs: {{images: informative.kept}}
  unique:
    kind: dedup@1
    inputs: {{images: informative.kept, embeddings: vectors}}
    with: {{threshold: 0.93}}
",
            root = root.display()
        ),
    );

    // Local store.
    let local = dir.path().join("local");
    let local_run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--store", local.to_str().unwrap()]);
        dinoflow()
            .current_dir(dir.path())
            .args(&all)
            .output()
            .unwrap()
    };
    let out = local_run(&["--json", "run", &wf]);
    assert!(out.status.success(), "{out:?}");
    let local_digests = digests(local_run, &json(&out));

    // The same workflow on S3.
    let url = "s3://dinoflow-test/runs/curation";
    let s3_run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--store", url]);
        dinoflow_s3(&server, dir.path(), &all)
    };
    let out = s3_run(&["--json", "run", &wf]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = json(&out);
    assert!(
        first["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "ok"),
        "{first}"
    );
    assert_eq!(digests(s3_run, &first), local_digests);
    let objects = server.bucket("list", "dinoflow-test");
    let objects = objects.as_object().unwrap();
    assert!(
        objects
            .keys()
            .all(|k| k.starts_with("runs/curation/objects/")),
        "{objects:?}"
    );
    let manifests = objects
        .keys()
        .filter(|k| k.ends_with("/manifest.json"))
        .count();
    assert_eq!(manifests, 4);

    // A cached re-run only reads: the server records no PUT, POST or DELETE, and the bucket
    // keeps the same keys, sizes, ETags and times.
    server.bucket("record", "start");
    let out = s3_run(&["--json", "run", &wf]);
    let requests = server.bucket("record", "stop");
    assert!(out.status.success());
    let requests = requests.as_array().unwrap();
    assert!(!requests.is_empty(), "nothing was recorded");
    let writes: Vec<&serde_json::Value> = requests
        .iter()
        .filter(|r| !matches!(r[0].as_str(), Some("GET" | "HEAD")))
        .collect();
    assert!(writes.is_empty(), "a cached re-run wrote: {writes:?}");
    eprintln!(
        "cached re-run on S3: {} requests, all reads",
        requests.len()
    );
    let again = json(&out);
    assert!(
        again["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "cached"),
        "{again}"
    );
    assert_eq!(
        &server.bucket("list", "dinoflow-test"),
        &serde_json::Value::Object(objects.clone())
    );
    // The whole bucket checks out against its manifests.
    let check = s3_run(&["--json", "gc", "--check"]);
    assert!(check.status.success(), "{check:?}");
    assert_eq!(json(&check)["committed"].as_array().unwrap().len(), 4);
}
