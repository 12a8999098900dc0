//! The registry of stage kinds known to this build.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::stage::{DynStage, Stage};

/// Stage kinds by name.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn DynStage>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a stage kind, replacing one of the same name.
    pub fn register<S: Stage>(&mut self, stage: S) -> &mut Self {
        self.kinds.insert(Stage::kind(&stage), Arc::new(stage));
        self
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn DynStage>> {
        self.kinds.get(name)
    }

    /// Every kind, sorted by name.
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn DynStage>> {
        self.kinds.values()
    }

    /// The kinds' names, for error hints.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }
}
