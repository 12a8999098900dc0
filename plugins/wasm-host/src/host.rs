//! Loading, checking, compiling, caching and running filter plugins.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Func, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};

use crate::batch::WireBatch;
use crate::bindings::{Filter, FilterPre};
use crate::error::WasmError;
use crate::{Batch, Columns, Info, Param};

/// The contract's types-only import, followed by its version.
const TYPES_IMPORT: &str = "dinoflow:filter/types@";
/// The major version of the contract this host implements, with its dot.
const CONTRACT_MAJOR: &str = "2.";

/// Epoch ticks come every this many milliseconds.
const TICK_MS: u64 = 5;

/// Sandbox limits for one plugin instance.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-time limit for one call.
    pub timeout_ms: u64,
    /// Linear-memory cap in MiB.
    pub memory_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            memory_mb: 256,
        }
    }
}

/// What a plugin says about itself (its `describe()`), plus its digest.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// The plugin's own description.
    pub info: Info,
    /// blake3 of the plugin file, hex.
    pub digest: String,
}

impl PluginInfo {
    /// The text of drop reason `code`.
    pub fn reason(&self, code: u8) -> Option<&str> {
        self.info
            .reasons
            .iter()
            .find(|r| r.code == code)
            .map(|r| r.text.as_str())
    }
}

/// One wasmtime engine with an epoch ticker and a compiled-code cache folder.
pub struct FilterHost {
    engine: Engine,
    cache_dir: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Drop for FilterHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl FilterHost {
    /// A host caching compiled plugins in `cache_dir`.
    pub fn new(cache_dir: &Path) -> Result<Self, WasmError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ticker, flag) = (engine.weak(), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(TICK_MS));
                    match ticker.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| WasmError::Engine(e.to_string()))?;
        Ok(Self {
            engine,
            cache_dir: cache_dir.to_path_buf(),
            stop,
        })
    }

    /// The default cache folder: `$DINOFLOW_CACHE_DIR`, else `$XDG_CACHE_HOME/dinoflow/wasm`, else
    /// `~/.cache/dinoflow/wasm`.
    pub fn default_cache_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("DINOFLOW_CACHE_DIR") {
            return PathBuf::from(d);
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("dinoflow").join("wasm")
    }

    /// Loads a plugin from its bytes (a component, or a core module carrying its component type),
    /// refusing any import, compiling it (or reusing the cached compilation) and asking `describe()`.
    /// `name` names the plugin in errors (usually the file name).
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<FilterPlugin, WasmError> {
        let invalid = |reason: String| WasmError::Invalid {
            plugin: name.to_string(),
            reason,
        };
        let digest = blake3::hash(bytes).to_hex().to_string();
        let component_bytes = to_component(bytes).map_err(|reason| {
            if let Some(import) = reason.strip_prefix("import:") {
                WasmError::ForbiddenImport {
                    plugin: name.to_string(),
                    import: import.to_string(),
                }
            } else {
                invalid(reason)
            }
        })?;
        let component = self.compile(&digest, &component_bytes, name)?;
        let ty = component.component_type();
        if let Some(import) = ty
            .imports(&self.engine)
            .find(|(_, import)| !types_only(&self.engine, &import.ty))
            .map(|(name, _)| name.to_string())
        {
            return Err(WasmError::ForbiddenImport {
                plugin: name.to_string(),
                import,
            });
        }
        if let Some(version) = ty
            .imports(&self.engine)
            .find_map(|(name, _)| name.strip_prefix(TYPES_IMPORT).map(str::to_string))
            .filter(|v| !v.starts_with(CONTRACT_MAJOR))
        {
            return Err(invalid(format!(
                "built against dinoflow:filter@{version}, but this dinoflow speaks dinoflow:filter@{CONTRACT_MAJOR}x; rebuild it against plugins/wit/filter.wit"
            )));
        }
        let linker: Linker<State> = Linker::new(&self.engine);
        let pre = linker
            .instantiate_pre(&component)
            .and_then(FilterPre::new)
            .map_err(|e| {
                invalid(format!(
                    "does not implement the dinoflow:filter world: {e:#}"
                ))
            })?;
        let mut plugin = FilterPlugin {
            name: name.to_string(),
            engine: self.engine.clone(),
            pre,
            info: PluginInfo {
                info: Info::empty(),
                digest,
            },
        };
        let mut probe = plugin.new_instance(Limits::default())?;
        let info = probe
            .bindings
            .call_describe(&mut probe.store)
            .map_err(|e| classify(name, Limits::default(), e, "describe", 0))?;
        plugin.info.info = info.into();
        Ok(plugin)
    }

    /// Compiles a component, or deserialises the compilation cached under its digest.
    fn compile(&self, digest: &str, component: &[u8], name: &str) -> Result<Component, WasmError> {
        let path = self
            .cache_dir
            .join(format!("{digest}-wasmtime{}.cwasm", wasmtime_version()));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of this same wasmtime version
            // (the version is in its name) into the user's own cache folder.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cached compilation: {e:#}")
                }
            }
        }
        let compiled = Component::new(&self.engine, component).map_err(|e| WasmError::Invalid {
            plugin: name.to_string(),
            reason: format!("{e:#}"),
        })?;
        if let Ok(bytes) = compiled.serialize() {
            let cache_err = |e| WasmError::Cache {
                path: path.display().to_string(),
                source: e,
            };
            std::fs::create_dir_all(&self.cache_dir).map_err(cache_err)?;
            // Unique per call: tests (and stages) in one process may compile the same plugin at
            // once, and a shared temporary name lets one rename the other's file away.
            static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
            std::fs::write(&tmp, bytes).map_err(cache_err)?;
            std::fs::rename(&tmp, &path).map_err(cache_err)?;
        }
        Ok(compiled)
    }
}

/// True for an import that only brings types (the WIT world's `use types.{...}`): nothing callable,
/// so nothing the host must provide.
fn types_only(engine: &Engine, item: &ComponentItem) -> bool {
    match item {
        ComponentItem::Type(_) => true,
        ComponentItem::ComponentInstance(inst) => inst
            .exports(engine)
            .all(|(_, export)| matches!(export.ty, ComponentItem::Type(_))),
        _ => false,
    }
}

fn wasmtime_version() -> &'static str {
    // Compiled code is only valid for the wasmtime that produced it.
    "48"
}

/// Turns a core module carrying its component type (what `cargo build --target
/// wasm32-unknown-unknown` with wit-bindgen produces) into a component; passes components through.
/// Errors starting with `import:` name a forbidden import.
fn to_component(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly file (bad magic number)".into());
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(bytes.to_vec()),
        [0x01, 0x00, 0x00, 0x00] => {
            // Validate first: the encoder assumes a well-formed module (it panics on truncated ones).
            wasmtime::wasmparser::validate(bytes).map_err(|e| format!("{e}"))?;
            if let Some(import) = first_core_import(bytes) {
                return Err(format!("import:{import}"));
            }
            wit_component::ComponentEncoder::default()
                .module(bytes)
                .and_then(|e| e.validate(true).encode())
                .map_err(|e| format!("{e:#}"))
        }
        _ => Err("unknown WebAssembly version".into()),
    }
}

/// The first import of a core module, as `module::name`.
fn first_core_import(bytes: &[u8]) -> Option<String> {
    let parser = wasmtime::wasmparser::Parser::new(0);
    for payload in parser.parse_all(bytes) {
        if let Ok(wasmtime::wasmparser::Payload::ImportSection(reader)) = payload
            && let Some(import) = reader.into_imports().flatten().next()
        {
            return Some(format!("{}::{}", import.module, import.name));
        }
    }
    None
}

/// Store data: the instance's resource limits.
struct State {
    limits: StoreLimits,
}

/// A loaded, compiled plugin, ready to be instantiated (one instance per worker thread).
pub struct FilterPlugin {
    name: String,
    engine: Engine,
    pre: FilterPre<State>,
    info: PluginInfo,
}

impl FilterPlugin {
    /// The plugin's name for errors (its file name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the plugin says about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn new_instance(&self, limits: Limits) -> Result<FilterInstance, WasmError> {
        let state = State {
            limits: StoreLimitsBuilder::new()
                .memory_size(usize::try_from(limits.memory_mb << 20).unwrap_or(usize::MAX))
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(ticks(limits));
        let instance = self
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| classify(&self.name, limits, e, "instantiate", 0))?;
        let invalid = |e: wasmtime::Error| WasmError::Invalid {
            plugin: self.name.clone(),
            reason: format!("does not implement the dinoflow:filter world: {e:#}"),
        };
        let bindings = Filter::new(&mut store, &instance).map_err(invalid)?;
        // `filter` is called through its own typed handle, to lower the batch from borrowed
        // columns (`Filter::call_filter` takes owned vectors); `Filter::new` checked its type.
        let filter = instance
            .get_func(&mut store, "filter")
            .ok_or_else(|| invalid(wasmtime::Error::msg("no `filter` export")))?;
        let mut declared = [false; 256];
        declared[0] = true;
        for r in &self.info.info.reasons {
            declared[usize::from(r.code)] = true;
        }
        let dense_up_to = declared
            .iter()
            .position(|&d| !d)
            .map_or(u8::MAX, |first_gap| (first_gap - 1) as u8);
        Ok(FilterInstance {
            plugin: self.name.clone(),
            store,
            bindings,
            filter,
            reads: self.info.info.reads,
            limits,
            declared,
            dense_up_to,
        })
    }

    /// A new instance configured with `params` (name → value as text), sandboxed by `limits`.
    pub fn instantiate(
        &self,
        params: &[(String, String)],
        limits: Limits,
    ) -> Result<FilterInstance, WasmError> {
        let mut inst = self.new_instance(limits)?;
        let params: Vec<Param> = params
            .iter()
            .map(|(name, value)| Param {
                name: name.clone(),
                value: value.clone(),
            })
            .collect();
        inst.store.set_epoch_deadline(ticks(limits));
        match inst.bindings.call_configure(&mut inst.store, &params) {
            Ok(Ok(())) => Ok(inst),
            Ok(Err(reason)) => Err(WasmError::Config {
                plugin: self.name.clone(),
                reason,
            }),
            Err(e) => Err(classify(&self.name, limits, e, "configure", 0)),
        }
    }
}

fn ticks(limits: Limits) -> u64 {
    limits.timeout_ms.div_ceil(TICK_MS).max(1)
}

/// Turns a wasmtime error from a call into the error the user sees.
fn classify(
    plugin: &str,
    limits: Limits,
    e: wasmtime::Error,
    call: &'static str,
    batch: u64,
) -> WasmError {
    let text = format!("{e:#}");
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        WasmError::Timeout {
            plugin: plugin.to_string(),
            batch,
            limit_ms: limits.timeout_ms,
        }
    } else if text.contains("forcing trap when growing memory") {
        WasmError::MemoryLimit {
            plugin: plugin.to_string(),
            batch,
            limit_mb: limits.memory_mb,
        }
    } else {
        WasmError::Trap {
            plugin: plugin.to_string(),
            call,
            batch,
            reason: text,
        }
    }
}

/// One configured instance of a plugin; use one per worker thread.
pub struct FilterInstance {
    plugin: String,
    store: Store<State>,
    bindings: Filter,
    /// The `filter` export.
    filter: Func,
    /// The columns the plugin reads (its `describe()`).
    reads: Columns,
    limits: Limits,
    /// `declared[c]`: code `c` keeps the row (0) or is one of the plugin's reasons.
    declared: [bool; 256],
    /// Every code from 0 up to this one is declared (the usual case: codes 1, 2, ...).
    dense_up_to: u8,
}

impl FilterInstance {
    /// Runs the filter over `batch` (the `index`-th batch, for errors) and returns one code per row,
    /// checked against the row count and the codes the plugin declared. Only the columns the
    /// plugin reads are copied into it; the others arrive empty.
    pub fn filter(&mut self, batch: &Batch, index: u64) -> Result<Vec<u8>, WasmError> {
        let rows = batch.rows();
        let wire_rows = u32::try_from(rows).map_err(|_| WasmError::TooManyRows {
            plugin: self.plugin.clone(),
            batch: index,
            rows,
        })?;
        self.store.set_epoch_deadline(ticks(self.limits));
        let (codes,) = self
            .filter
            .typed::<(WireBatch<'_>,), (Vec<u8>,)>(&self.store)
            .and_then(|f| f.call(&mut self.store, (batch.wire(wire_rows, self.reads),)))
            .map_err(|e| classify(&self.plugin, self.limits, e, "filter", index))?;
        if codes.len() != rows {
            return Err(WasmError::WrongLength {
                plugin: self.plugin.clone(),
                batch: index,
                rows,
                got: codes.len(),
            });
        }
        // The largest code (a loop that vectorises) settles it when the codes are dense; else
        // look each one up.
        let largest = codes.iter().fold(0u8, |m, &c| m.max(c));
        let undeclared = if largest <= self.dense_up_to {
            None
        } else {
            codes.iter().find(|&&c| !self.declared[usize::from(c)])
        };
        if let Some(&code) = undeclared {
            return Err(WasmError::UnknownCode {
                plugin: self.plugin.clone(),
                batch: index,
                code,
            });
        }
        Ok(codes)
    }
}
