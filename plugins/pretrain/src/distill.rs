//! The `distill` stage (dinov2.md §4): a student trained against a frozen teacher with the
//! pretraining loop, without masks or stochastic depth; the student's EMA is the result.

use bytes::Bytes;
use dinoflow_engine::{
    ExtraInput, Port, PortType, Resources, Stage, StageContext, StageError, async_trait, semver,
};
use dinoflow_storage::read_url;
use dinoflow_vision::tch::Device;
use dinoflow_vision::weights::{read_safetensors, variables};
use dinoflow_vision::{DeviceChoice, Preset, VitConfig, VitModel};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::learner::{FrozenTeacher, ObjectiveConfig};
use crate::monitor;
use crate::stage::{
    TRAINING_METADATA_KEY, check, failed, monitor_field, run_training, training_outputs,
};
use crate::{PretrainConfig, PretrainError};

/// Configuration of the `distill` stage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The student's architecture and its training recipe: the `pretrain` stage's settings, with
    /// `drop_path` left at 0 (distillation uses no stochastic depth). Its head needs the teacher's
    /// number of prototypes.
    pub student: PretrainConfig,
    /// An external teacher (a timm-layout safetensors file and its preset), used when the
    /// `teacher` input is not connected. Its heads are not in the file: they are initialised from
    /// the seed and stay fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<ExternalTeacher>,
}

/// A teacher checkpoint outside the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalTeacher {
    /// URL or path of the safetensors file.
    pub weights: String,
    /// Its architecture.
    pub preset: Preset,
}

/// The `distill` stage.
pub struct Distill;

/// What the training file of a pretrain or distill output says about its EMA network.
#[derive(Deserialize)]
struct TrainingAbout {
    vit: VitConfig,
    objective: ObjectiveConfig,
}

#[async_trait]
impl Stage for Distill {
    type Config = DistillConfig;

    fn kind(&self) -> &'static str {
        "distill"
    }
    fn version(&self) -> semver::Version {
        semver::Version::new(1, 3, 0)
    }
    fn description(&self) -> &'static str {
        "DINOv2 distillation: a student (DINO + iBOT + KoLeo, multi-crop) against a frozen teacher; the student's EMA is the model"
    }
    fn inputs(&self) -> Vec<Port> {
        let mut ports = vec![
            Port::new(
                "images",
                PortType::Dataset("images"),
                "the training images (labels unused)",
            ),
            Port::optional(
                "teacher",
                PortType::Artifact("vit"),
                "the teacher: a pretrain or distill output (with its heads); or set `teacher:`",
            ),
        ];
        ports.extend(monitor::input_ports());
        ports
    }
    fn outputs(&self) -> Vec<Port> {
        training_outputs(
            "model.safetensors (the student EMA's backbone, timm names) and training.safetensors \
             (student and its EMA with heads)",
        )
    }
    fn check(&self, config: &DistillConfig) -> Result<(), String> {
        if config.student.drop_path != 0.0 {
            return Err(format!(
                "`student.drop_path` is {}: distillation trains without stochastic depth \
                 (dinov2.md §4); remove it",
                config.student.drop_path
            ));
        }
        check(&config.student).map_err(|e| format!("`student`: {e}"))
    }
    fn resources(&self, config: &DistillConfig) -> Resources {
        Resources {
            cpus: u32::MAX,
            gpus: u32::from(config.student.device == DeviceChoice::Cuda),
            memory_gb: 4.0,
        }
    }

    async fn extra_inputs(&self, config: &DistillConfig) -> Result<Vec<ExtraInput>, StageError> {
        let Some(teacher) = &config.teacher else {
            return Ok(Vec::new());
        };
        let bytes = read_external(&teacher.weights).await?;
        Ok(vec![ExtraInput {
            name: format!(
                "teacher ({})",
                teacher
                    .weights
                    .rsplit('/')
                    .next()
                    .unwrap_or(&teacher.weights)
            ),
            digest: blake3::hash(&bytes).to_hex().to_string(),
            summary: format!("{} bytes", bytes.len()),
        }])
    }

    async fn run(&self, config: &DistillConfig, ctx: &StageContext) -> Result<(), StageError> {
        // The monitor's inputs are checked before the teacher is read.
        monitor::inputs(config.student.monitor.as_ref(), monitor_field(true), ctx)
            .map_err(failed)?;
        let teacher = match (&config.teacher, ctx.input("teacher").is_some()) {
            (Some(_), true) => {
                return Err(failed(PretrainError::Config(
                    "both the `teacher` input and `teacher:` are set: keep one".into(),
                )));
            }
            (None, false) => {
                return Err(failed(PretrainError::Config(
                    "no teacher: connect the `teacher` input to a pretrain or distill output, or \
                     set `teacher: {weights, preset}`"
                        .into(),
                )));
            }
            (Some(external), false) => {
                let bytes = read_external(&external.weights).await?;
                backbone_teacher(
                    &bytes,
                    &external.weights,
                    Some(external.preset),
                    &config.student,
                )
                .map_err(failed)?
            }
            (None, true) => artifact_teacher(ctx, &config.student).await?,
        };
        ctx.metric("teacher_embed_dim", teacher.vit.embed_dim as u64);
        ctx.metric("teacher_depth", teacher.vit.depth as u64);
        run_training(&config.student, ctx, Some(teacher)).await
    }
}

async fn read_external(url: &str) -> Result<Bytes, StageError> {
    read_url(url).await.map_err(|e| {
        failed(PretrainError::Config(format!(
            "reading the teacher {url}: {e}"
        )))
    })
}

/// The teacher on the `teacher` input: its EMA network with heads from `training.safetensors`,
/// or, for an artifact with the backbone only, that backbone with fresh heads.
async fn artifact_teacher(
    ctx: &StageContext,
    student: &PretrainConfig,
) -> Result<FrozenTeacher, StageError> {
    let name = "the `teacher` input";
    match ctx
        .input_artifact_file("teacher", "training.safetensors")
        .await
    {
        Ok(bytes) => {
            let file = read_safetensors(&bytes, name)
                .map_err(|e| failed(PretrainError::Config(e.to_string())))?;
            let about: TrainingAbout = file
                .metadata
                .get(TRAINING_METADATA_KEY)
                .and_then(|m| serde_json::from_str(m).ok())
                .ok_or_else(|| {
                    failed(PretrainError::Config(format!(
                        "{name}: training.safetensors lacks valid `{TRAINING_METADATA_KEY}` metadata"
                    )))
                })?;
            let tensors = file
                .tensors
                .into_iter()
                .filter_map(|(k, t)| k.strip_prefix("ema.").map(|k| (k.to_string(), t)))
                .collect();
            Ok(FrozenTeacher {
                vit: about.vit,
                objective: about.objective,
                tensors,
            })
        }
        Err(StageError::MissingArtifactFile { .. }) => {
            let bytes = ctx
                .input_artifact_file("teacher", "model.safetensors")
                .await?;
            backbone_teacher(&bytes, name, None, student).map_err(failed)
        }
        Err(e) => Err(e),
    }
}

/// A teacher from a backbone-only checkpoint; its heads are the student's head settings.
fn backbone_teacher(
    bytes: &[u8],
    name: &str,
    preset: Option<Preset>,
    student: &PretrainConfig,
) -> Result<FrozenTeacher, PretrainError> {
    let preset = preset.map(Preset::config);
    let model = VitModel::from_safetensors(bytes, name, preset.as_ref(), Device::Cpu)
        .map_err(|e| PretrainError::Config(e.to_string()))?;
    let tensors = variables(&model.vs)
        .into_iter()
        .map(|(k, t)| (format!("backbone.{k}"), t))
        .collect();
    Ok(FrozenTeacher {
        vit: model.config().clone(),
        objective: student.objective.clone(),
        tensors,
    })
}
