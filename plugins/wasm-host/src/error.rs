//! The host's error type. Every variant names the plugin.

/// What can go wrong loading or running a filter plugin.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// The file is not WebAssembly, or not a valid module/component for the filter world.
    #[error("plugin {plugin}: invalid WebAssembly: {reason}")]
    Invalid {
        /// The plugin (file name).
        plugin: String,
        /// What is wrong.
        reason: String,
    },
    /// The plugin imports something; filters get no imports at all.
    #[error(
        "plugin {plugin}: imports `{import}`, but filter plugins may import nothing (no files, network, clocks or randomness); rebuild it for wasm32-unknown-unknown without WASI"
    )]
    ForbiddenImport {
        /// The plugin.
        plugin: String,
        /// The first import found.
        import: String,
    },
    /// The plugin rejected its parameters.
    #[error("plugin {plugin}: bad parameters: {reason}")]
    Config {
        /// The plugin.
        plugin: String,
        /// The plugin's own message.
        reason: String,
    },
    /// A batch ran past the time limit.
    #[error(
        "plugin {plugin}: batch {batch} ran past the time limit of {limit_ms} ms and was stopped"
    )]
    Timeout {
        /// The plugin.
        plugin: String,
        /// Index of the batch.
        batch: u64,
        /// The limit.
        limit_ms: u64,
    },
    /// The plugin tried to grow its memory past the cap.
    #[error(
        "plugin {plugin}: batch {batch} exceeded the memory cap of {limit_mb} MiB and was stopped"
    )]
    MemoryLimit {
        /// The plugin.
        plugin: String,
        /// Index of the batch.
        batch: u64,
        /// The cap.
        limit_mb: u64,
    },
    /// The plugin trapped (panicked, hit `unreachable`, divided by zero...).
    #[error("plugin {plugin}: {call} trapped on batch {batch}: {reason}")]
    Trap {
        /// The plugin.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// Index of the batch (0 outside `filter`).
        batch: u64,
        /// The trap.
        reason: String,
    },
    /// A batch has more rows than the contract's `u32` row count can say.
    #[error(
        "plugin {plugin}: batch {batch} has {rows} rows, more than a plugin can take (2^32 - 1)"
    )]
    TooManyRows {
        /// The plugin.
        plugin: String,
        /// Index of the batch.
        batch: u64,
        /// Rows in the batch.
        rows: usize,
    },
    /// The plugin returned a result of the wrong length.
    #[error("plugin {plugin}: batch {batch} has {rows} rows but the plugin returned {got} codes")]
    WrongLength {
        /// The plugin.
        plugin: String,
        /// Index of the batch.
        batch: u64,
        /// Rows sent.
        rows: usize,
        /// Codes returned.
        got: usize,
    },
    /// The plugin returned a code it did not declare in `describe()`.
    #[error(
        "plugin {plugin}: batch {batch} returned code {code}, which describe() does not declare"
    )]
    UnknownCode {
        /// The plugin.
        plugin: String,
        /// Index of the batch.
        batch: u64,
        /// The code.
        code: u8,
    },
    /// The compiled-code cache could not be written.
    #[error("compiled-code cache {path}: {source}")]
    Cache {
        /// The cache file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The wasmtime engine could not be set up.
    #[error("wasmtime: {0}")]
    Engine(String),
}
