//! From a parsed workflow to a validated DAG: kinds resolved, configs typed, inputs connected and
//! type-checked, cycles rejected, stages in topological order.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{EngineError, SpecError};
use crate::registry::Registry;
use crate::spec::WorkflowFile;
use crate::stage::{DynStage, ParsedConfig, Resources, split_port_key};

/// One connection: input `port` of a stage reads output `from_port` of stage `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The input port.
    pub port: String,
    /// The upstream stage.
    pub from: String,
    /// The upstream output port.
    pub from_port: String,
}

/// A validated stage.
#[derive(Clone)]
pub struct Node {
    /// The stage's name in the workflow.
    pub name: String,
    /// Its kind.
    pub stage: Arc<dyn DynStage>,
    /// Its validated config.
    pub config: ParsedConfig,
    /// Its inputs.
    pub inputs: Vec<Edge>,
    /// What it needs to run.
    pub resources: Resources,
}

/// A validated workflow, stages in topological order.
#[derive(Clone)]
pub struct Dag {
    /// The workflow's name.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// The store URL it asks for, if any.
    pub store: Option<String>,
    /// The workflow file's text as read (recorded with each run for reproduction).
    pub source: String,
    /// The preset applied, if any.
    pub preset: Option<String>,
    /// Stages, every one after all of its inputs.
    pub nodes: Vec<Node>,
}

impl Dag {
    /// Reads, parses and validates a workflow file.
    pub fn load(path: &str, registry: &Registry) -> Result<Self, EngineError> {
        Self::load_preset(path, registry, None)
    }

    /// Reads, parses and validates a workflow file with one of its presets applied.
    pub fn load_preset(
        path: &str,
        registry: &Registry,
        preset: Option<&str>,
    ) -> Result<Self, EngineError> {
        let source = std::fs::read_to_string(path).map_err(|e| EngineError::ReadWorkflow {
            path: path.to_string(),
            source: e,
        })?;
        Ok(Self::parse_preset(path, &source, registry, preset)?)
    }

    /// Parses and validates workflow `source`, naming it `file` in errors.
    pub fn parse(file: &str, source: &str, registry: &Registry) -> Result<Self, SpecError> {
        Self::parse_preset(file, source, registry, None)
    }

    /// Parses and validates workflow `source` with preset `preset` (if any) applied.
    pub fn parse_preset(
        file: &str,
        source: &str,
        registry: &Registry,
        preset: Option<&str>,
    ) -> Result<Self, SpecError> {
        let mut wf = WorkflowFile::parse(file, source)?;
        if let Some(name) = preset {
            wf.apply_preset(name)?;
        }
        if let Some(url) = &wf.spec.store
            && let Err(e) = dinoflow_storage::check_url(url)
        {
            return Err(wf.error(
                "store",
                e.to_string(),
                Some("a folder path, or file://, memory://, s3://, gs://, az:// or http(s):// with a bucket".into()),
            ));
        }
        let mut nodes = Vec::with_capacity(wf.spec.stages.len());
        for (name, spec) in &wf.spec.stages {
            let stage = resolve_kind(&wf, name, &spec.kind, registry)?;
            let config = stage.parse_config(&spec.config).map_err(|e| {
                // A value the preset wrote is located in the preset.
                let from_preset = preset
                    .map(|p| format!("presets.{p}.{name}.{}", e.path))
                    .filter(|path| !e.path.is_empty() && wf.positions.contains(path));
                let at = match from_preset {
                    Some(path) => path,
                    None if e.path.is_empty() => format!("stages.{name}.with"),
                    None => format!("stages.{name}.with.{}", e.path),
                };
                let field = if e.path.is_empty() {
                    String::new()
                } else {
                    format!(" (at `with.{}`)", e.path)
                };
                wf.error(
                    &at,
                    format!(
                        "stage `{name}` ({}): invalid config{field}: {}",
                        stage.kind(),
                        e.message
                    ),
                    Some(format!(
                        "`dinoflow stages {}` shows this kind's config fields",
                        stage.kind()
                    )),
                )
            })?;
            let mut resources = stage.resources(&config);
            if let Some(c) = spec.resources.cpus {
                resources.cpus = c;
            }
            if let Some(g) = spec.resources.gpus {
                resources.gpus = g;
            }
            if let Some(m) = spec.resources.memory_gb {
                resources.memory_gb = m;
            }
            nodes.push(Node {
                name: name.clone(),
                stage,
                config,
                inputs: Vec::new(),
                resources,
            });
        }
        let index: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        for i in 0..nodes.len() {
            nodes[i].inputs = connect(&wf, &nodes, &index, &nodes[i])?;
        }
        let order = topological_order(&wf, &nodes, &index)?;
        let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
        let nodes = order.into_iter().filter_map(|i| slots[i].take()).collect();
        Ok(Self {
            name: wf.spec.name.clone(),
            file: file.to_string(),
            store: wf.spec.store.clone(),
            source: source.to_string(),
            preset: preset.map(str::to_string),
            nodes,
        })
    }

    /// The stage called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

fn resolve_kind(
    wf: &WorkflowFile,
    name: &str,
    kind: &str,
    registry: &Registry,
) -> Result<Arc<dyn DynStage>, SpecError> {
    let at = format!("stages.{name}.kind");
    let (base, pin) = match kind.split_once('@') {
        Some((b, p)) => (b, Some(p)),
        None => (kind, None),
    };
    let Some(stage) = registry.get(base) else {
        return Err(wf.error(
            &at,
            format!("stage `{name}`: unknown stage kind `{base}`"),
            Some(format!("known kinds: {}", registry.names().join(", "))),
        ));
    };
    if let Some(pin) = pin {
        let req = semver::VersionReq::parse(pin).map_err(|e| {
            wf.error(
                &at,
                format!("stage `{name}`: invalid version pin `{pin}`: {e}"),
                Some(format!("pin a major version, e.g. `{base}@1`")),
            )
        })?;
        let have = stage.version();
        if !req.matches(&have) {
            return Err(wf.error(
                &at,
                format!("stage `{name}`: `{kind}` is pinned, but this dinoflow has {base} {have}"),
                Some(format!(
                    "change the pin to `{base}@{}` or use a dinoflow with {base} {pin}",
                    have.major
                )),
            ));
        }
    }
    Ok(Arc::clone(stage))
}

fn connect(
    wf: &WorkflowFile,
    nodes: &[Node],
    index: &HashMap<String, usize>,
    node: &Node,
) -> Result<Vec<Edge>, SpecError> {
    let name = &node.name;
    let spec = &wf.spec.stages[name.as_str()];
    let ports = node.stage.inputs();
    let mut edges = Vec::new();
    for (port, target) in &spec.inputs {
        let at = format!("stages.{name}.inputs.{port}");
        let (base, label) = split_port_key(port);
        let Some(input) = ports.iter().find(|p| p.name == base) else {
            let valid: Vec<_> = ports.iter().map(|p| p.name).collect();
            return Err(wf.error(
                &at,
                format!(
                    "stage `{name}` ({}) has no input port `{port}`",
                    node.stage.kind()
                ),
                Some(if valid.is_empty() {
                    format!("{} takes no inputs; remove `inputs:`", node.stage.kind())
                } else {
                    format!("its input ports are: {}", valid.join(", "))
                }),
            ));
        };
        match label {
            Some(_) if !input.many => {
                return Err(wf.error(
                    &at,
                    format!(
                        "stage `{name}`: input `{base}` takes one upstream output, so it has no labels (`{port}`)"
                    ),
                    Some(format!("write `{base}: <stage>`")),
                ));
            }
            Some(label) if !is_label(label) => {
                return Err(wf.error(
                    &at,
                    format!("stage `{name}`: `{port}` has an empty or invalid label"),
                    Some(format!(
                        "write `{base}:<label>` with a label of letters, digits, `_` and `-`"
                    )),
                ));
            }
            _ => {}
        }
        let (from, from_port) = match target.split_once('.') {
            Some((s, p)) => (s, Some(p)),
            None => (target.as_str(), None),
        };
        let Some(&up_i) = index.get(from) else {
            let names: Vec<_> = wf.spec.stages.keys().map(String::as_str).collect();
            return Err(wf.error(
                &at,
                format!("stage `{name}`: input `{port}` refers to a missing stage `{from}`"),
                Some(format!("stages in this workflow: {}", names.join(", "))),
            ));
        };
        let upstream = &nodes[up_i];
        let outs = upstream.stage.outputs();
        let chosen = match from_port {
            Some(p) => outs.iter().find(|o| o.name == p).ok_or_else(|| {
                let valid: Vec<_> = outs.iter().map(|o| o.name).collect();
                wf.error(
                    &at,
                    format!(
                        "stage `{name}`: input `{port}` refers to `{target}`, but `{from}` ({}) has no output `{p}`",
                        upstream.stage.kind()
                    ),
                    Some(format!("outputs of `{from}`: {}", valid.join(", "))),
                )
            })?,
            None => outs
                .iter()
                .find(|o| o.name == port)
                .or_else(|| outs.first())
                .ok_or_else(|| {
                    wf.error(
                        &at,
                        format!("stage `{name}`: `{from}` has no outputs to read"),
                        None,
                    )
                })?,
        };
        if chosen.ty != input.ty {
            return Err(wf.error(
                &at,
                format!(
                    "stage `{name}`: input `{port}` expects {} but `{from}.{}` is {}",
                    input.ty, chosen.name, chosen.ty
                ),
                Some(format!(
                    "connect `{port}` to an output of type {}; `dinoflow stages` lists each kind's ports",
                    input.ty
                )),
            ));
        }
        edges.push(Edge {
            port: port.clone(),
            from: from.to_string(),
            from_port: chosen.name.to_string(),
        });
    }
    for p in ports.iter().filter(|p| !p.optional) {
        if !spec.inputs.keys().any(|k| split_port_key(k).0 == p.name) {
            return Err(wf.error(
                &format!("stages.{name}"),
                format!(
                    "stage `{name}` ({}): required input `{}` is not connected",
                    node.stage.kind(),
                    p.name
                ),
                Some(if p.many {
                    format!(
                        "add `inputs: {{{}:<label>: <stage>}}` ({}), once per upstream output",
                        p.name, p.ty
                    )
                } else {
                    format!("add `inputs: {{{}: <stage>}}` ({})", p.name, p.ty)
                }),
            ));
        }
    }
    Ok(edges)
}

fn topological_order(
    wf: &WorkflowFile,
    nodes: &[Node],
    index: &HashMap<String, usize>,
) -> Result<Vec<usize>, SpecError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        i: usize,
        nodes: &[Node],
        index: &HashMap<String, usize>,
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        marks[i] = Mark::Active;
        stack.push(i);
        for e in &nodes[i].inputs {
            let j = index[&e.from];
            match marks[j] {
                Mark::Done => {}
                Mark::Active => {
                    let start = stack.iter().position(|&s| s == j).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(j);
                    return Err(cycle);
                }
                Mark::New => visit(j, nodes, index, marks, stack, order)?,
            }
        }
        stack.pop();
        marks[i] = Mark::Done;
        order.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::New; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    for i in 0..nodes.len() {
        if marks[i] == Mark::New {
            let mut stack = Vec::new();
            if let Err(cycle) = visit(i, nodes, index, &mut marks, &mut stack, &mut order) {
                // The stack runs consumer → producer; show data flow order instead.
                let names: Vec<&str> = cycle
                    .iter()
                    .rev()
                    .map(|&k| nodes[k].name.as_str())
                    .collect();
                return Err(wf.error(
                    &format!("stages.{}.inputs", names[1]),
                    format!("the workflow has a cycle: {}", names.join(" → ")),
                    Some(format!(
                        "a stage cannot depend on its own output; break the cycle by removing one of these inputs (e.g. of `{}`)",
                        names[1]
                    )),
                ));
            }
        }
    }
    Ok(order)
}

fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
