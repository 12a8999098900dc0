//! Weights as safetensors bytes with timm's key names: read, write, and load into a model with every
//! missing, unexpected or mis-shaped key reported by name.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::error::VisionError;

/// Named tensors in a weights file, sorted by name.
pub type NamedTensors = BTreeMap<String, Tensor>;

/// A parsed safetensors file: its tensors (on the CPU) and its string metadata.
#[derive(Debug)]
pub struct WeightsFile {
    /// The tensors by name.
    pub tensors: NamedTensors,
    /// The `__metadata__` map (dinoflow keeps the model config there).
    pub metadata: HashMap<String, String>,
}

/// Parses safetensors `bytes`; `source_name` names the file in errors.
pub fn read_safetensors(bytes: &[u8], source_name: &str) -> Result<WeightsFile, VisionError> {
    let bad = |message: String| VisionError::Safetensors {
        source_name: source_name.to_string(),
        message,
    };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("{e:?}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let file = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("{e:?}")))?;
    let mut tensors = NamedTensors::new();
    for (name, view) in file.tensors() {
        let t = Tensor::try_from(view).map_err(|e| bad(format!("tensor {name}: {e}")))?;
        tensors.insert(name, t);
    }
    Ok(WeightsFile { tensors, metadata })
}

/// A tensor copied to host memory in safetensors' layout.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn host_tensor(t: &Tensor) -> Result<HostTensor, VisionError> {
    let t = t.to_device(Device::Cpu).contiguous();
    let dtype = Dtype::try_from(t.kind())
        .map_err(|e| VisionError::Config(format!("cannot store a {:?} tensor: {e}", t.kind())))?;
    let numel = t.numel();
    let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut bytes, numel)?;
    Ok(HostTensor {
        dtype,
        shape: t.size().iter().map(|&d| d as usize).collect(),
        bytes,
    })
}

/// Serialises named tensors (any device) and `metadata` to safetensors bytes.
pub fn safetensors_bytes(
    tensors: &NamedTensors,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, VisionError> {
    let host = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), host_tensor(t)?)))
        .collect::<Result<Vec<_>, VisionError>>()?;
    let meta = (!metadata.is_empty()).then_some(metadata);
    safetensors::tensor::serialize(host, &meta).map_err(|e| VisionError::Safetensors {
        source_name: "(being written)".into(),
        message: format!("{e:?}"),
    })
}

/// The variables of `vs` by name, sorted.
pub fn variables(vs: &VarStore) -> NamedTensors {
    vs.variables().into_iter().collect()
}

/// Copies `tensors` into the variables of `vs` (converting dtype and device). Every variable must
/// be present with its exact shape and no other key may be present; otherwise nothing is copied and
/// the error names the missing, unexpected and mis-shaped keys.
pub fn load_into(
    vs: &VarStore,
    tensors: &NamedTensors,
    source_name: &str,
) -> Result<(), VisionError> {
    let vars = variables(vs);
    let missing: Vec<&str> = vars
        .keys()
        .filter(|k| !tensors.contains_key(*k))
        .map(String::as_str)
        .collect();
    let unexpected: Vec<&str> = tensors
        .keys()
        .filter(|k| !vars.contains_key(*k))
        .map(String::as_str)
        .collect();
    let mis_shaped: Vec<String> = vars
        .iter()
        .filter_map(|(k, v)| {
            let t = tensors.get(k)?;
            (t.size() != v.size())
                .then(|| format!("{k} (model {:?}, file {:?})", v.size(), t.size()))
        })
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing keys: {}", name_list(&missing)));
    }
    if !unexpected.is_empty() {
        problems.push(format!("unexpected keys: {}", name_list(&unexpected)));
    }
    if !mis_shaped.is_empty() {
        problems.push(format!("wrong shapes: {}", name_list(&mis_shaped)));
    }
    if !problems.is_empty() {
        return Err(VisionError::WeightsMismatch {
            source_name: source_name.to_string(),
            details: problems.join("; "),
        });
    }
    tch::no_grad(|| {
        for (k, mut v) in vars {
            if let Some(t) = tensors.get(&k) {
                v.f_copy_(t)?;
            }
        }
        Ok::<(), tch::TchError>(())
    })?;
    Ok(())
}

/// At most 12 names, then how many more.
fn name_list<S: AsRef<str>>(names: &[S]) -> String {
    let shown: Vec<&str> = names.iter().take(12).map(AsRef::as_ref).collect();
    let more = names.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}
