//! Malformed workflows: every error names the file, the line and column of the problem, says what
//! is wrong and, where it can, what to do. Expected positions are counted by hand from the YAML
//! text of each case (lines and columns from 1).

mod common;

use common::{Runs, registry, spec_error};
use dinoflow_engine::{Registry, SpecError};

fn reg() -> Registry {
    registry(&Runs::default())
}

/// Parses `yaml`, expects an error at `line`:`column` whose message contains every `needle`.
#[track_caller]
fn expect(yaml: &str, line: usize, column: usize, needles: &[&str]) -> SpecError {
    let e = spec_error(&reg(), yaml);
    assert_eq!(
        (e.position.line, e.position.column),
        (line, column),
        "wrong position for error: {e}"
    );
    for n in needles {
        assert!(e.message.contains(n), "message lacks {n:?}: {e}");
    }
    assert_eq!(e.file, "wf.yaml");
    let shown = e.to_string();
    let prefix = format!("wf.yaml:{line}:{column}: ");
    assert!(
        shown.starts_with(&prefix),
        "display {shown:?} lacks {prefix:?}"
    );
    assert!(shown.contains(&e.message), "{shown}");
    if let Some(h) = &e.hint {
        assert!(shown.contains(&format!("\n  hint: {h}")), "{shown}");
    }
    e
}

#[track_caller]
fn hint(e: &SpecError) -> &str {
    e.hint
        .as_deref()
        .unwrap_or_else(|| panic!("no hint in: {e}"))
}

// ------------------------------------------------------------------------------------------------
// YAML syntax.

#[test]
fn yaml_bad_indentation() {
    // `with:` is indented 3 spaces: neither a key of stage `a` (4) nor a stage (2). The parser
    // gives up at the `w` and names the mapping it was reading: `stages`' (from line 3, column 3).
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
   with:
      count: 3
";
    let e = expect(
        yaml,
        5,
        4,
        &["did not find expected key, while parsing a block mapping at line 3 column 3"],
    );
    assert!(!e.message.contains("line 5"), "own position repeated: {e}");
}

#[test]
fn yaml_unclosed_flow_mapping() {
    // The `{` at line 5, column 11 is never closed; the parser notices at the end of the file
    // (line 6, column 1) and says where the mapping was opened.
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 3
";
    let e = expect(
        yaml,
        6,
        1,
        &["did not find expected ',' or '}', while parsing a flow mapping at line 5 column 11"],
    );
    assert!(!e.message.contains("line 6"), "own position repeated: {e}");
}

#[test]
fn yaml_mismatched_brackets() {
    // `[` at column 19 is closed by `}` at column 24.
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {items: [1, 2}
";
    expect(
        yaml,
        5,
        24,
        &["did not find expected ',' or ']', while parsing a flow sequence at line 5 column 19"],
    );
}

#[test]
fn yaml_tab_indentation() {
    let yaml = "name: demo\nstages:\n\ta:\n\t\tkind: numbers\n";
    // The tab at line 3, column 1 cannot start indentation.
    let e = expect(yaml, 3, 1, &["cannot start any token"]);
    assert!(hint(&e).contains("not tabs"), "{e}");
}

// ------------------------------------------------------------------------------------------------
// Structure of the workflow.

#[test]
fn unknown_top_level_field() {
    let yaml = "\
name: demo
owner: me
stages:
  a:
    kind: numbers
    with: {count: 3}
";
    let e = expect(
        yaml,
        2,
        1,
        &["unknown field `owner`", "`name`", "`store`", "`stages`"],
    );
    assert!(hint(&e).contains("remove or rename"));
}

#[test]
fn unknown_field_in_stage_lists_valid_fields() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    inptus: {}
    with: {count: 3}
";
    expect(
        yaml,
        5,
        5,
        &[
            "unknown field `inptus`",
            "`kind`",
            "`inputs`",
            "`with`",
            "`resources`",
        ],
    );
}

#[test]
fn missing_name() {
    let yaml = "\
stages:
  a:
    kind: numbers
    with: {count: 3}
";
    let e = expect(yaml, 1, 1, &["missing field `name`"]);
    assert!(hint(&e).contains("add the field"));
}

#[test]
fn missing_stages() {
    let yaml = "\
name: demo
store: out
";
    expect(yaml, 1, 1, &["missing field `stages`"]);
}

#[test]
fn missing_kind_in_stage() {
    let yaml = "\
name: demo
stages:
  a:
    with: {count: 3}
";
    // The stage's mapping starts at its first key, line 4 column 5.
    expect(yaml, 4, 5, &["missing field `kind`"]);
}

#[test]
fn empty_stages() {
    let yaml = "\
name: demo
stages: {}
";
    let e = expect(yaml, 2, 1, &["no stages"]);
    assert!(hint(&e).contains("add at least one stage"));
}

#[test]
fn stages_is_a_list() {
    let yaml = "\
name: demo
stages:
  - a
  - b
";
    let e = expect(yaml, 3, 3, &["invalid type: sequence", "expected a map"]);
    assert!(hint(&e).contains("type"));
}

#[test]
fn name_is_a_mapping() {
    let yaml = "\
name:
  first: demo
stages:
  a:
    kind: numbers
    with: {count: 1}
";
    expect(yaml, 2, 3, &["invalid type: map", "expected a string"]);
}

#[test]
fn invalid_stage_name_with_dot() {
    let yaml = "\
name: demo
stages:
  ok:
    kind: numbers
    with: {count: 1}
  load.v2:
    kind: numbers
    with: {count: 1}
";
    let e = expect(yaml, 6, 3, &["invalid stage name `load.v2`"]);
    assert!(hint(&e).contains("letters, digits"));
}

#[test]
fn invalid_stage_name_with_space() {
    let yaml = "\
name: demo
stages:
  my stage:
    kind: numbers
    with: {count: 1}
";
    expect(yaml, 3, 3, &["invalid stage name `my stage`"]);
}

#[test]
fn duplicate_stage_name() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 1}
  a:
    kind: numbers
    with: {count: 2}
";
    // The second `a` is the duplicate; serde alone would silently keep only one of them.
    let e = expect(
        yaml,
        6,
        3,
        &["duplicate key `a` in `stages` (first written at line 3)"],
    );
    assert!(hint(&e).contains("once"));
}

#[test]
fn duplicate_key_in_stage() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 1}
    kind: square
";
    expect(
        yaml,
        6,
        5,
        &["duplicate key `kind` in `stages.a` (first written at line 4)"],
    );
}

#[test]
fn duplicate_key_in_config() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with:
      count: 1
      count: 2
";
    expect(
        yaml,
        7,
        7,
        &["duplicate key `count` in `stages.a.with` (first written at line 6)"],
    );
}

#[test]
fn duplicate_top_level_key() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 1}
name: other
";
    let e = expect(
        yaml,
        6,
        1,
        &["duplicate key `name` (first written at line 1)"],
    );
    assert!(!e.message.contains(" in `"), "{e}");
}

#[test]
fn unknown_field_in_resources() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 1}
    resources: {cpus: 2, gpu: 1}
";
    // `gpu` starts at column 26 of line 6.
    expect(
        yaml,
        6,
        26,
        &["unknown field `gpu`", "`cpus`", "`gpus`", "`memory_gb`"],
    );
}

#[test]
fn wrong_type_in_resources() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 1}
    resources:
      memory_gb: lots
";
    expect(yaml, 7, 18, &["invalid type", "lots"]);
}

// ------------------------------------------------------------------------------------------------
// Kinds and versions.

#[test]
fn unknown_kind_lists_known_kinds() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbrs
    with: {count: 1}
";
    let e = expect(yaml, 4, 5, &["stage `a`", "unknown stage kind `numbrs`"]);
    assert_eq!(
        hint(&e),
        "known kinds: blob, check, gather, lines, numbers, shard-square, square, sum"
    );
}

#[test]
fn version_pin_mismatch() {
    let yaml = "\
name: demo
stages:
  first:
    kind: numbers@1
    with: {count: 1}
  second:
    kind: numbers@2
    with: {count: 1}
";
    // `numbers@1` matches 1.2.0; `numbers@2` does not.
    let e = expect(
        yaml,
        7,
        5,
        &["stage `second`", "`numbers@2` is pinned", "numbers 1.2.0"],
    );
    assert!(hint(&e).contains("`numbers@1`"), "{e}");
}

#[test]
fn invalid_version_pin() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers@one
    with: {count: 1}
";
    let e = expect(yaml, 4, 5, &["invalid version pin `one`"]);
    assert!(hint(&e).contains("numbers@1"));
}

#[test]
fn pin_for_unknown_kind_names_the_kind_not_the_pin() {
    let yaml = "\
name: demo
stages:
  a:
    kind: cube@1
";
    expect(yaml, 4, 5, &["unknown stage kind `cube`"]);
}

// ------------------------------------------------------------------------------------------------
// Stage config (`with:`).

#[test]
fn unknown_field_in_config_is_located_at_the_field() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with:
      count: 3
      strat: 1
";
    let e = expect(
        yaml,
        7,
        7,
        &[
            "stage `a` (numbers)",
            "unknown field `strat`",
            "`start`",
            "`count`",
        ],
    );
    assert!(hint(&e).contains("dinoflow stages numbers"));
}

#[test]
fn wrong_type_in_config() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with:
      start: 2
      count: three
";
    expect(
        yaml,
        7,
        7,
        &["with.count", "invalid type", "\"three\"", "u64"],
    );
}

#[test]
fn wrong_type_in_flow_config() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: -4}
";
    // `count` starts at column 12 of line 5.
    expect(yaml, 5, 12, &["with.count", "-4"]);
}

#[test]
fn missing_required_config_field() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with:
      start: 5
";
    // Located at `with:`, the block that lacks the field.
    expect(yaml, 5, 5, &["stage `a`", "missing field `count`"]);
}

#[test]
fn missing_config_block() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
";
    // No `with:` at all: located at the stage.
    expect(yaml, 3, 3, &["missing field `count`"]);
}

#[test]
fn config_for_kind_without_fields() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 1}
  b:
    kind: sum
    inputs: {rows: a}
    with: {scale: 2}
";
    expect(yaml, 9, 12, &["stage `b` (sum)", "unknown field `scale`"]);
}

// ------------------------------------------------------------------------------------------------
// Inputs.

#[test]
fn unknown_input_port_lists_valid_ports() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 3}
  b:
    kind: square
    inputs:
      rows: a
      extra: a
";
    let e = expect(
        yaml,
        10,
        7,
        &["stage `b` (square)", "no input port `extra`"],
    );
    assert_eq!(hint(&e), "its input ports are: rows");
}

#[test]
fn inputs_on_a_kind_without_inputs() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 3}
  b:
    kind: numbers
    with: {count: 3}
    inputs: {rows: a}
";
    // `rows` starts at column 14 of line 9.
    let e = expect(yaml, 9, 14, &["no input port `rows`"]);
    assert!(hint(&e).contains("takes no inputs"));
}

#[test]
fn input_from_missing_stage() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 3}
  b:
    kind: square
    inputs:
      rows: nothere
";
    let e = expect(
        yaml,
        9,
        7,
        &["stage `b`", "input `rows`", "missing stage `nothere`"],
    );
    assert_eq!(hint(&e), "stages in this workflow: a, b");
}

#[test]
fn input_from_missing_output_port() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 3}
  b:
    kind: square
    inputs:
      rows: a.nope
";
    let e = expect(
        yaml,
        9,
        7,
        &["`a.nope`", "`a` (numbers) has no output `nope`"],
    );
    assert_eq!(hint(&e), "outputs of `a`: rows");
}

#[test]
fn port_type_mismatch() {
    let yaml = "\
name: demo
stages:
  m:
    kind: blob
    with: {size: 8}
  b:
    kind: square
    inputs:
      rows: m
";
    let e = expect(
        yaml,
        9,
        7,
        &[
            "input `rows` expects dataset<numbers>",
            "`m.model` is artifact<blob>",
        ],
    );
    assert!(hint(&e).contains("dataset<numbers>"));
}

#[test]
fn required_input_not_connected() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 3}
  total:
    kind: sum
    inputs: {more: a}
";
    // `rows` is required, `more` is optional; located at the stage.
    let e = expect(
        yaml,
        6,
        3,
        &[
            "stage `total` (sum)",
            "required input `rows` is not connected",
        ],
    );
    assert!(hint(&e).contains("rows"));
}

// ------------------------------------------------------------------------------------------------
// Cycles.

#[test]
fn two_stage_cycle() {
    let yaml = "\
name: demo
stages:
  a:
    kind: square
    inputs: {rows: b}
  b:
    kind: square
    inputs: {rows: a}
";
    let e = expect(yaml, 8, 5, &["cycle", "a → b → a"]);
    assert!(hint(&e).contains("`b`"));
}

#[test]
fn three_stage_cycle_names_only_the_stages_in_it() {
    // Data flows src → total, total → b → c → total.
    let yaml = "\
name: demo
stages:
  src:
    kind: numbers
    with: {count: 2}
  total:
    kind: sum
    inputs: {rows: src, more: c}
  b:
    kind: square
    inputs: {rows: total}
  c:
    kind: square
    inputs: {rows: b}
";
    let e = expect(
        yaml,
        11,
        5,
        &["the workflow has a cycle: total → b → c → total"],
    );
    assert!(!e.message.contains("src"), "{e}");
}

#[test]
fn self_loop() {
    let yaml = "\
name: demo
stages:
  a:
    kind: square
    inputs: {rows: a}
";
    expect(yaml, 5, 5, &["cycle", "a → a"]);
}

// ------------------------------------------------------------------------------------------------
// Valid workflows still parse.

#[test]
fn a_valid_workflow_parses_in_topological_order() {
    let yaml = "\
name: demo
stages:
  total:
    kind: sum
    inputs: {rows: sq, more: a.rows}
  sq:
    kind: square
    inputs: {rows: a}
  a:
    kind: numbers@1
    with: {count: 3}
    resources: {cpus: 2, memory_gb: 1.5}
";
    let dag = common::dag(&reg(), yaml);
    let names: Vec<&str> = dag.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "sq", "total"]);
    let a = dag.node("a").unwrap();
    assert_eq!((a.resources.cpus, a.resources.memory_gb), (2, 1.5));
    let total = dag.node("total").unwrap();
    let edges: Vec<(&str, &str, &str)> = total
        .inputs
        .iter()
        .map(|e| (e.port.as_str(), e.from.as_str(), e.from_port.as_str()))
        .collect();
    assert_eq!(edges, [("rows", "sq", "rows"), ("more", "a", "rows")]);
}

// ------------------------------------------------------------------------------------------------
// Labelled inputs and presets.

#[test]
fn label_on_a_single_input_port() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 3}
  total:
    kind: sum
    inputs: {rows:x: a}
";
    let e = expect(
        yaml,
        8,
        14,
        &["input `rows` takes one upstream output", "`rows:x`"],
    );
    assert!(hint(&e).contains("rows: <stage>"));
}

#[test]
fn empty_label() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 3}
  g:
    kind: gather
    inputs: {'rows:': a}
";
    let e = expect(yaml, 8, 14, &["`rows:` has an empty or invalid label"]);
    assert!(hint(&e).contains("rows:<label>"));
}

#[test]
fn port_with_labels_not_connected() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 3}
  g:
    kind: gather
";
    let e = expect(yaml, 6, 3, &["required input `rows` is not connected"]);
    assert!(hint(&e).contains("rows:<label>"));
}

/// Parses `yaml` with `preset` applied and returns its error.
fn preset_error(yaml: &str, preset: &str) -> SpecError {
    match dinoflow_engine::Dag::parse_preset("wf.yaml", yaml, &reg(), Some(preset)) {
        Ok(_) => panic!("expected an error for preset {preset}"),
        Err(e) => e,
    }
}

const WITH_PRESETS: &str = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 3}
presets:
  big:
    a: {count: 1000}
  typo:
    b: {count: 1}
  flat:
    a: 5
";

#[test]
fn unknown_preset() {
    let e = preset_error(WITH_PRESETS, "gpu");
    assert_eq!((e.position.line, e.position.column), (6, 1), "{e}");
    assert!(e.message.contains("no preset `gpu`"), "{e}");
    assert!(hint(&e).contains("big, typo, flat"), "{e}");
}

#[test]
fn preset_naming_a_missing_stage() {
    let e = preset_error(WITH_PRESETS, "typo");
    assert_eq!((e.position.line, e.position.column), (10, 5), "{e}");
    assert!(
        e.message.contains("overrides `b`, which is not a stage"),
        "{e}"
    );
}

#[test]
fn preset_overrides_that_are_not_a_mapping() {
    let e = preset_error(WITH_PRESETS, "flat");
    assert_eq!((e.position.line, e.position.column), (12, 5), "{e}");
    assert!(e.message.contains("not a mapping"), "{e}");
}

#[test]
fn preset_with_a_bad_value_fails_validation_at_the_stage() {
    let yaml = "\
name: demo
stages:
  a:
    kind: numbers
    with: {count: 3}
presets:
  bad:
    a: {count: many}
";
    let e = preset_error(yaml, "bad");
    assert!(
        e.message.contains("stage `a` (numbers): invalid config"),
        "{e}"
    );
}
