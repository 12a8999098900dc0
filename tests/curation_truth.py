"""Scores a run of workflows/curate-fashion-mnist.yaml against the generator's ground truth.

Usage: curation_truth.py STORE TRUTH_JSON FILTER_FP DEDUP_FP RETRIEVAL_FP

Reads the stored datasets with pyarrow and truth.json (scripts/make-curation-data.py) and prints
JSON: per copy kind, the recall of injected pool duplicates (a pair counts as found when the
original and its copy are not both kept) and the share of evaluation copies removed; the precision
of self-dedup (removed rows that belong to an injected pair and name their partner as
representative) and of relative dedup (removed rows that are evaluation copies); the share of
retrieved rows that are Fashion-MNIST (not digits or photo tiles).
"""
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq


def read(store: Path, fp: str, port: str):
    obj = store / "objects" / fp
    manifest = json.loads((obj / "manifest.json").read_text())
    return pq.ParquetDataset([str(obj / f["path"]) for f in manifest["outputs"][port]["files"]]).read()


def name(source: str) -> str:
    return source.rsplit("/", 1)[-1]


def main() -> None:
    store, truth = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    filter_fp, dedup_fp, retrieval_fp = sys.argv[3:6]
    pool = read(store, filter_fp, "kept")
    # Ids are content digests: an exact copy has its original's id, so files are the keys.
    id_of = dict(zip(map(name, pool.column("source").to_pylist()), pool.column("id").to_pylist()))
    present = set(id_of)
    kept = set(map(name, read(store, dedup_fp, "kept").column("source").to_pylist()))
    dups = read(store, dedup_fp, "duplicates").to_pylist()

    partner = {}
    pairs_by_kind: dict[str, list] = {}
    evalcopies_by_kind: dict[str, list] = {}
    for f, t in truth.items():
        if "duplicate_of" in t and f in present and t["duplicate_of"] in present:
            partner[f], partner[t["duplicate_of"]] = t["duplicate_of"], f
            pairs_by_kind.setdefault(t["copy"], []).append((f, t["duplicate_of"]))
        if "eval_copy_of" in t and f in present:
            evalcopies_by_kind.setdefault(t["copy"], []).append(f)

    removed_self = [d for d in dups if d["reason"] == "duplicate"]
    removed_eval = [d for d in dups if d["reason"] == "evaluation"]
    removed_eval_files = {name(d["source"]) for d in removed_eval}
    def names_partner(d) -> bool:
        p = partner.get(name(d["source"]))
        return p is not None and id_of[p] == d["representative"]

    correct = sum(1 for d in removed_self if names_partner(d))
    evalcopy_files = {f for fs in evalcopies_by_kind.values() for f in fs}
    retrieved = read(store, retrieval_fp, "retrieved")
    kinds = [truth[name(s)]["kind"] for s in retrieved.column("source").to_pylist()]
    report = {
        "pool_rows": len(present),
        "kept_rows": len(kept),
        "pairs": {k: len(v) for k, v in pairs_by_kind.items()},
        "recall": {
            k: sum(1 for c, o in v if not (c in kept and o in kept)) / len(v)
            for k, v in pairs_by_kind.items()
        },
        "removed_self": len(removed_self),
        "self_precision": correct / max(1, len(removed_self)),
        "false_self": sorted(name(d["source"]) for d in removed_self if not names_partner(d))[:20],
        "eval_removed": {
            k: sum(1 for f in v if f in removed_eval_files) / len(v)
            for k, v in evalcopies_by_kind.items()
        },
        "removed_eval": len(removed_eval),
        "eval_precision": len(removed_eval_files & evalcopy_files) / max(1, len(removed_eval_files)),
        "retrieved_rows": retrieved.num_rows,
        "retrieved_fmnist": kinds.count("fmnist") / max(1, len(kinds)),
        "retrieved_kinds": {k: kinds.count(k) for k in sorted(set(kinds))},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
