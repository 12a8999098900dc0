//! One DINOv2 training iteration (dinov2 `train/ssl_meta_arch.py`, dinov2.md §2.1–2.3): the
//! student and its EMA teacher (backbone, DINO head, optional separate iBOT head), the teacher
//! targets, the four loss terms, per-module clipping, AdamW and the teacher update.
//!
//! Distillation (dinov2.md §4) is the same iteration with a frozen teacher of its own
//! architecture and a separate EMA of the student; its batches carry no masks, so the iBOT term
//! covers every patch of the global crops.
//!
//! The student runs the global and local crops as two forward passes rather than dinov2's packed
//! sequence (the same result, dinov2.md §9). Variables are named `backbone.*` (timm's ViT names),
//! `dino_head.*` and `ibot_head.*`.

use dinoflow_vision::tch::nn::VarStore;
use dinoflow_vision::tch::{Device, Kind, Tensor, nn, no_grad};
use dinoflow_vision::weights::NamedTensors;
use dinoflow_vision::{Autocast, Vit, VitConfig, autocast, clear_grad};
use serde::{Deserialize, Serialize};

use crate::loss::{Center, dino_loss, ibot_loss, koleo_loss, sinkhorn_knopp};
use crate::masking::BatchMasks;
use crate::optim::{AdamW, Param, clip_grad_norm, ema_update};
use crate::{DinoHead, HeadConfig, PretrainError};

/// How the teacher's logits become targets.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Centering {
    /// Softmax after subtracting an EMA of the batch-mean logits (momentum 0.9): dinov2's default.
    #[default]
    Centering,
    /// Sinkhorn-Knopp with 3 iterations (dinov2's ViT-L and ViT-g configs).
    SinkhornKnopp,
}

/// The objective's settings (defaults: dinov2's `ssl_default_config.yaml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveConfig {
    /// The DINO head (and the iBOT head when separate).
    pub head: HeadConfig,
    /// A separate iBOT head instead of sharing the DINO head (dinov2: ViT-L and g only).
    pub separate_ibot_head: bool,
    /// Teacher target normalisation.
    pub centering: Centering,
    /// Weight of the DINO terms (1.0).
    pub dino_weight: f64,
    /// Weight of the iBOT term (1.0).
    pub ibot_weight: f64,
    /// Weight of KoLeo per global crop (0.1).
    pub koleo_weight: f64,
    /// Gradient norm limit per module (3.0).
    pub clip_grad: f64,
    /// Layer-wise learning-rate decay (0.9; 1.0 = off).
    pub layer_decay: f64,
    /// Extra learning-rate factor of the patch embedding (0.2).
    pub patch_embed_lr: f64,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        Self {
            head: HeadConfig::dinov2(),
            separate_ibot_head: false,
            centering: Centering::default(),
            dino_weight: 1.0,
            ibot_weight: 1.0,
            koleo_weight: 0.1,
            clip_grad: 3.0,
            layer_decay: 0.9,
            patch_embed_lr: 0.2,
        }
    }
}

/// A backbone with its heads.
#[derive(Debug)]
pub struct Network {
    /// The ViT.
    pub backbone: Vit,
    /// The DINO head.
    pub dino_head: DinoHead,
    /// The iBOT head, when not shared with the DINO head.
    pub ibot_head: Option<DinoHead>,
}

impl Network {
    fn new(
        p: &nn::Path,
        vit: &VitConfig,
        objective: &ObjectiveConfig,
    ) -> Result<Self, PretrainError> {
        let backbone =
            Vit::new(&(p / "backbone"), vit).map_err(|e| PretrainError::Config(e.to_string()))?;
        let dino_head = DinoHead::new(&(p / "dino_head"), vit.embed_dim, &objective.head)?;
        let ibot_head = if objective.separate_ibot_head {
            Some(DinoHead::new(
                &(p / "ibot_head"),
                vit.embed_dim,
                &objective.head,
            )?)
        } else {
            None
        };
        Ok(Self {
            backbone,
            dino_head,
            ibot_head,
        })
    }

    fn ibot(&self) -> &DinoHead {
        self.ibot_head.as_ref().unwrap_or(&self.dino_head)
    }
}

/// One batch on the training device.
#[derive(Debug)]
pub struct Batch {
    /// Global crops, crop-major: all first crops, then all second crops (2B × C × H × W).
    pub global: Tensor,
    /// Local crops, crop-major (n_local·B × C × h × w), or none.
    pub local: Option<Tensor>,
    /// Local crops per image.
    pub local_crops: usize,
    /// iBOT masks of the global crops (2B × patches, bool); none when distilling.
    pub masks: Option<Tensor>,
    /// Flat indices of the masked patches in the (2B · patches) grid.
    pub mask_indices: Tensor,
    /// 1 / (masked patches of the crop) for every masked patch.
    pub mask_weights: Tensor,
}

impl Batch {
    /// A batch from crops and their masks, moved to `device`.
    pub fn new(
        global: Tensor,
        local: Option<Tensor>,
        local_crops: usize,
        masks: &BatchMasks,
        device: Device,
    ) -> Result<Self, PretrainError> {
        let crops = global.size()[0];
        if crops % 2 != 0 || masks.masks.len() as i64 != crops {
            return Err(PretrainError::Shape(format!(
                "{crops} global crops (need 2 per image) and {} masks",
                masks.masks.len()
            )));
        }
        let flat: Vec<bool> = masks.masks.iter().flatten().copied().collect();
        let patches = masks.masks.first().map_or(0, Vec::len) as i64;
        Ok(Self {
            global: global.to_device(device),
            local: local.map(|l| l.to_device(device)),
            local_crops,
            masks: Some(
                Tensor::from_slice(&flat)
                    .view([crops, patches])
                    .to_device(device),
            ),
            mask_indices: Tensor::from_slice(&masks.indices()).to_device(device),
            mask_weights: Tensor::from_slice(&masks.weights()).to_device(device),
        })
    }

    /// A batch without masks, for distillation: the iBOT term covers all `patches` of every
    /// global crop, each weighted 1 / `patches`.
    pub fn unmasked(
        global: Tensor,
        local: Option<Tensor>,
        local_crops: usize,
        patches: i64,
        device: Device,
    ) -> Self {
        let tokens = global.size()[0] * patches;
        Self {
            global: global.to_device(device),
            local: local.map(|l| l.to_device(device)),
            local_crops,
            masks: None,
            mask_indices: Tensor::arange(tokens, (Kind::Int64, device)),
            mask_weights: Tensor::full([tokens], 1.0 / patches as f64, (Kind::Float, device)),
        }
    }
}

/// The scheduled values of one iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepValues {
    /// Learning rate.
    pub lr: f64,
    /// Learning rate of the prototype layers (0 during the first epoch).
    pub last_layer_lr: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// EMA momentum of the teacher.
    pub momentum: f64,
    /// Teacher temperature.
    pub teacher_temp: f64,
}

/// The losses and health figures of one iteration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepLosses {
    /// DINO loss over local-crop pairs (already divided by the number of pairs).
    pub dino_local: f64,
    /// DINO loss over the two cross-global pairs.
    pub dino_global: f64,
    /// KoLeo, weighted, summed over the global crops.
    pub koleo: f64,
    /// iBOT loss, weighted.
    pub ibot: f64,
    /// The sum that was minimised.
    pub total: f64,
    /// Mean entropy of the teacher's DINO targets (nats; log K = uniform, 0 = one-hot).
    pub teacher_entropy: f64,
    /// Mean over dimensions of the batch standard deviation of the L2-normalised student cls
    /// tokens (near 0 = collapse).
    pub feature_std: f64,
}

/// What the student's forward passes give the losses, in float32.
struct StudentOutputs {
    /// DINO logits of the global crops' cls tokens.
    global_logits: Tensor,
    /// DINO logits of the local crops' cls tokens, when there are local crops.
    local_logits: Option<Tensor>,
    /// iBOT logits of the masked patches.
    patch_logits: Tensor,
    /// The global crops' cls tokens before the head (KoLeo, feature std).
    cls: Tensor,
}

/// The teacher of a distillation: a trained network with its heads, frozen.
pub struct FrozenTeacher {
    /// Its backbone.
    pub vit: VitConfig,
    /// Its heads (the student's get the same number of prototypes).
    pub objective: ObjectiveConfig,
    /// Its variables by name (`backbone.*`, `dino_head.*`, `ibot_head.*`).
    pub tensors: NamedTensors,
}

/// Student, teacher, optimiser and centres: everything one iteration changes.
pub struct Learner {
    /// The student's variables.
    pub student_vs: VarStore,
    /// The student.
    pub student: Network,
    /// The teacher's variables (no gradients).
    pub teacher_vs: VarStore,
    /// The teacher: an EMA of the student, or frozen when distilling.
    pub teacher: Network,
    /// When distilling, the student's EMA (the stage's result) and its variables.
    student_ema: Option<(VarStore, Network)>,
    /// The student's trainable tensors with their multipliers, sorted by name.
    pub params: Vec<Param>,
    /// The EMA's tensors (the teacher's, or the student EMA's), in the order of `params`.
    ema_tensors: Vec<Tensor>,
    /// AdamW state.
    pub optimizer: AdamW,
    /// Centre of the DINO targets.
    pub dino_center: Center,
    /// Centre of the iBOT targets.
    pub ibot_center: Center,
    /// Mixed precision of the forward passes (none: float32). Parameters, gradients, optimiser
    /// state, targets and losses stay float32 either way.
    pub autocast: Option<Autocast>,
    objective: ObjectiveConfig,
}

/// The student's parameters, sorted by name, and the tensors of the same names in `ema`.
fn paired(
    student_vs: &VarStore,
    ema: &VarStore,
    depth: usize,
    objective: &ObjectiveConfig,
) -> Result<(Vec<Param>, Vec<Tensor>), PretrainError> {
    let mut named: Vec<(String, Tensor)> = student_vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let ema_vars = ema.variables();
    let mut ema_tensors = Vec::with_capacity(named.len());
    for (name, _) in &named {
        let t = ema_vars.get(name).ok_or_else(|| {
            PretrainError::Shape(format!("the EMA lacks the student's variable {name}"))
        })?;
        ema_tensors.push(t.shallow_clone());
    }
    let params = named
        .into_iter()
        .map(|(name, t)| {
            Param::new(
                &name,
                t,
                depth,
                objective.layer_decay,
                objective.patch_embed_lr,
            )
        })
        .collect();
    Ok((params, ema_tensors))
}

impl Learner {
    /// A student with random weights (the ViT gets a mask token) and a teacher equal to it.
    pub fn new(
        vit: &VitConfig,
        objective: &ObjectiveConfig,
        device: Device,
    ) -> Result<Self, PretrainError> {
        let vit = VitConfig {
            mask_token: true,
            ..vit.clone()
        };
        let student_vs = VarStore::new(device);
        let student = Network::new(&student_vs.root(), &vit, objective)?;
        let mut teacher_vs = VarStore::new(device);
        let teacher = Network::new(&teacher_vs.root(), &vit, objective)?;
        teacher_vs.copy(&student_vs)?;
        teacher_vs.freeze();
        let (params, ema_tensors) =
            paired(&student_vs, &teacher_vs, vit.depth as usize, objective)?;
        Ok(Self::assemble(
            (student_vs, student),
            (teacher_vs, teacher),
            None,
            params,
            ema_tensors,
            objective,
            device,
        ))
    }

    /// A distillation: a student of architecture `vit` with random weights and fresh heads, its
    /// EMA equal to it, and `teacher` loaded and frozen. Teacher and student must cut crops into
    /// the same patch grid and their heads must have the same number of prototypes.
    pub fn distill(
        vit: &VitConfig,
        objective: &ObjectiveConfig,
        teacher: &FrozenTeacher,
        device: Device,
    ) -> Result<Self, PretrainError> {
        if teacher.vit.patch_size != vit.patch_size {
            return Err(PretrainError::Config(format!(
                "the teacher's patch size is {} and the student's {}: the iBOT term compares \
                 their patch tokens one to one, so they must be equal",
                teacher.vit.patch_size, vit.patch_size
            )));
        }
        if teacher.objective.head.prototypes != objective.head.prototypes {
            return Err(PretrainError::Config(format!(
                "the teacher's head has {} prototypes: set `objective.head.prototypes: {}` for the \
                 student",
                teacher.objective.head.prototypes, teacher.objective.head.prototypes
            )));
        }
        let teacher_vit = VitConfig {
            drop_path: 0.0,
            ..teacher.vit.clone()
        };
        let mut teacher_vs = VarStore::new(device);
        let teacher_net = Network::new(&teacher_vs.root(), &teacher_vit, &teacher.objective)?;
        let mut tensors: NamedTensors = teacher
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect();
        if !tensors.keys().any(|k| k.starts_with("dino_head.")) {
            // A backbone without heads (an external checkpoint): the heads keep their fresh,
            // seeded initialisation, a fixed random projection of the teacher's features.
            for (name, t) in teacher_vs.variables() {
                if !name.starts_with("backbone.") {
                    tensors.insert(name, t);
                }
            }
        }
        dinoflow_vision::weights::load_into(&teacher_vs, &tensors, "the teacher")
            .map_err(|e| PretrainError::Config(e.to_string()))?;
        teacher_vs.freeze();
        let student_vs = VarStore::new(device);
        let student = Network::new(&student_vs.root(), vit, objective)?;
        let mut ema_vs = VarStore::new(device);
        let ema = Network::new(&ema_vs.root(), vit, objective)?;
        ema_vs.copy(&student_vs)?;
        ema_vs.freeze();
        let (params, ema_tensors) = paired(&student_vs, &ema_vs, vit.depth as usize, objective)?;
        Ok(Self::assemble(
            (student_vs, student),
            (teacher_vs, teacher_net),
            Some((ema_vs, ema)),
            params,
            ema_tensors,
            objective,
            device,
        ))
    }

    fn assemble(
        (student_vs, student): (VarStore, Network),
        (teacher_vs, teacher): (VarStore, Network),
        student_ema: Option<(VarStore, Network)>,
        params: Vec<Param>,
        ema_tensors: Vec<Tensor>,
        objective: &ObjectiveConfig,
        device: Device,
    ) -> Self {
        let optimizer = AdamW::new(&params);
        let k = objective.head.prototypes;
        Self {
            student_vs,
            student,
            teacher_vs,
            teacher,
            student_ema,
            params,
            ema_tensors,
            optimizer,
            dino_center: Center::new(k, 0.9, device),
            ibot_center: Center::new(k, 0.9, device),
            autocast: None,
            objective: objective.clone(),
        }
    }

    /// Loads the student's weights from a safetensors file (every variable by name) and makes
    /// its EMA equal to it.
    pub fn load_student(&mut self, path: &std::path::Path) -> Result<(), PretrainError> {
        self.student_vs.load(path)?;
        match &mut self.student_ema {
            Some((ema_vs, _)) => ema_vs.copy(&self.student_vs)?,
            None => self.teacher_vs.copy(&self.student_vs)?,
        }
        Ok(())
    }

    /// Everything a resumed run needs, as named CPU tensors: `student.*`, `ema.*` (the EMA:
    /// pretraining's teacher, distillation's student EMA), `adam_m.*`, `adam_v.*` (by parameter
    /// name) and `center.dino`, `center.ibot`. A frozen teacher is not included. The optimiser's
    /// step count is [`AdamW::step`].
    pub fn state(&self) -> NamedTensors {
        let mut out = NamedTensors::new();
        for ((p, t), (m, v)) in self
            .params
            .iter()
            .zip(&self.ema_tensors)
            .zip(&self.optimizer.moments)
        {
            let cpu = |x: &Tensor| x.detach().to_device(Device::Cpu);
            out.insert(format!("student.{}", p.name), cpu(&p.tensor));
            out.insert(format!("ema.{}", p.name), cpu(t));
            out.insert(format!("adam_m.{}", p.name), cpu(m));
            out.insert(format!("adam_v.{}", p.name), cpu(v));
        }
        out.insert(
            "center.dino".into(),
            self.dino_center.value().to_device(Device::Cpu),
        );
        out.insert(
            "center.ibot".into(),
            self.ibot_center.value().to_device(Device::Cpu),
        );
        out
    }

    /// Restores what [`Learner::state`] saved (and the optimiser's step count `adam_step`).
    pub fn restore(&mut self, state: &NamedTensors, adam_step: i64) -> Result<(), PretrainError> {
        let get = |key: String| {
            state
                .get(&key)
                .ok_or_else(|| PretrainError::Shape(format!("checkpoint lacks {key}")))
        };
        let device = self.dino_center.value().device();
        no_grad(|| -> Result<(), PretrainError> {
            for ((p, t), (m, v)) in self
                .params
                .iter()
                .zip(&self.ema_tensors)
                .zip(&mut self.optimizer.moments)
            {
                for (dst, key) in [
                    (p.tensor.shallow_clone(), format!("student.{}", p.name)),
                    (t.shallow_clone(), format!("ema.{}", p.name)),
                    (m.shallow_clone(), format!("adam_m.{}", p.name)),
                    (v.shallow_clone(), format!("adam_v.{}", p.name)),
                ] {
                    let src = get(key.clone())?;
                    if src.size() != dst.size() {
                        return Err(PretrainError::Shape(format!(
                            "checkpoint {key} has shape {:?}, the model {:?}",
                            src.size(),
                            dst.size()
                        )));
                    }
                    let mut dst = dst;
                    dst.f_copy_(src)?;
                }
            }
            Ok(())
        })?;
        self.dino_center
            .set_value(get("center.dino".into())?.to_device(device));
        self.ibot_center
            .set_value(get("center.ibot".into())?.to_device(device));
        self.optimizer.step = adam_step;
        Ok(())
    }

    /// The EMA's backbone with timm's names (no `backbone.` prefix): the trained model
    /// (pretraining's teacher, distillation's student EMA).
    pub fn model_backbone(&self) -> NamedTensors {
        self.params
            .iter()
            .zip(&self.ema_tensors)
            .filter_map(|(p, t)| {
                p.name
                    .strip_prefix("backbone.")
                    .map(|n| (n.to_string(), t.detach().to_device(Device::Cpu)))
            })
            .collect()
    }

    /// The EMA's backbone network, whose weights [`Learner::model_backbone`] returns.
    pub fn ema_backbone(&self) -> &Vit {
        match &self.student_ema {
            Some((_, ema)) => &ema.backbone,
            None => &self.teacher.backbone,
        }
    }

    /// Teacher targets for the DINO head (swapped global crops) and for the masked patches.
    fn teacher_targets(
        &mut self,
        batch: &Batch,
        temp: f64,
    ) -> Result<(Tensor, Tensor), PretrainError> {
        no_grad(|| {
            let teacher = &self.teacher;
            let (cls_logits, patch_logits) = autocast(self.autocast, || {
                let out = teacher
                    .backbone
                    .forward_selected(&batch.global, None, Some(&batch.mask_indices), false)
                    .map_err(|e| PretrainError::Shape(e.to_string()))?;
                let b = out.cls.size()[0] / 2;
                let swapped = Tensor::cat(&[out.cls.narrow(0, b, b), out.cls.narrow(0, 0, b)], 0);
                Ok::<_, PretrainError>((
                    teacher.dino_head.forward(&swapped).to_kind(Kind::Float),
                    teacher.ibot().forward(&out.patches).to_kind(Kind::Float),
                ))
            })
            .map_err(|e| PretrainError::Config(e.to_string()))??;
            Ok(match self.objective.centering {
                Centering::Centering => {
                    let dino = self.dino_center.targets(&cls_logits, temp);
                    let ibot = self.ibot_center.targets(&patch_logits, temp);
                    self.dino_center.update(&cls_logits);
                    self.ibot_center.update(&patch_logits);
                    (dino, ibot)
                }
                Centering::SinkhornKnopp => (
                    sinkhorn_knopp(&cls_logits, temp, 3),
                    sinkhorn_knopp(&patch_logits, temp, 3),
                ),
            })
        })
    }

    /// The student's forward passes (under [`Learner::autocast`]), with float32 outputs.
    fn student_forward(&self, batch: &Batch) -> Result<StudentOutputs, PretrainError> {
        let student = &self.student;
        autocast(self.autocast, || {
            let global = student
                .backbone
                .forward_selected(
                    &batch.global,
                    batch.masks.as_ref(),
                    Some(&batch.mask_indices),
                    true,
                )
                .map_err(|e| PretrainError::Shape(e.to_string()))?;
            let local_logits = match &batch.local {
                Some(local) if batch.local_crops > 0 => {
                    let cls = student
                        .backbone
                        .forward_selected(local, None, None, true)
                        .map_err(|e| PretrainError::Shape(e.to_string()))?
                        .cls;
                    Some(student.dino_head.forward(&cls).to_kind(Kind::Float))
                }
                _ => None,
            };
            Ok(StudentOutputs {
                global_logits: student.dino_head.forward(&global.cls).to_kind(Kind::Float),
                local_logits,
                patch_logits: student.ibot().forward(&global.patches).to_kind(Kind::Float),
                cls: global.cls.to_kind(Kind::Float),
            })
        })
        .map_err(|e| PretrainError::Config(e.to_string()))?
    }

    /// One iteration: forward, losses, backward, clipping, AdamW, teacher EMA.
    pub fn step(
        &mut self,
        batch: &Batch,
        values: &StepValues,
    ) -> Result<StepLosses, PretrainError> {
        let (dino_targets, ibot_targets) = self.teacher_targets(batch, values.teacher_temp)?;
        let n_local = batch.local_crops as i64;
        let out = self.student_forward(batch)?;
        let pairs = (n_local * 2 + 2) as f64;
        let dino_local = match &out.local_logits {
            Some(logits) => {
                dino_loss(&logits.chunk(n_local, 0), &dino_targets.chunk(2, 0))? / pairs
            }
            None => Tensor::zeros([], (Kind::Float, batch.global.device())),
        };
        let dino_global =
            dino_loss(&[out.global_logits], &[dino_targets.shallow_clone()])? * 2.0 / pairs;
        let mut koleo = Tensor::zeros([], (Kind::Float, batch.global.device()));
        for chunk in out.cls.chunk(2, 0) {
            koleo += koleo_loss(&chunk)?;
        }
        let koleo = koleo * self.objective.koleo_weight;
        let patch_logits = out.patch_logits;
        let ibot = ibot_loss(
            &patch_logits,
            &ibot_targets,
            &batch.mask_weights,
            out.cls.size()[0],
        )? * self.objective.ibot_weight;
        let total = (&dino_local + &dino_global) * self.objective.dino_weight + &koleo + &ibot;
        let total_value = total.double_value(&[]);
        if !total_value.is_finite() {
            return Err(PretrainError::NonFinite(format!(
                "loss is {total_value} (dino local {}, dino global {}, koleo {}, ibot {})",
                dino_local.double_value(&[]),
                dino_global.double_value(&[]),
                koleo.double_value(&[]),
                ibot.double_value(&[])
            )));
        }

        for p in &self.params {
            clear_grad(&mut p.tensor.shallow_clone());
        }
        total.backward();
        for module in ["backbone.", "dino_head.", "ibot_head."] {
            let members: Vec<&Param> = self
                .params
                .iter()
                .filter(|p| p.name.starts_with(module))
                .collect();
            if !members.is_empty() {
                clip_grad_norm(&members, self.objective.clip_grad);
            }
        }
        self.optimizer.step(
            &self.params,
            values.lr,
            values.last_layer_lr,
            values.weight_decay,
        )?;
        let student_tensors: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.tensor.shallow_clone())
            .collect();
        ema_update(&self.ema_tensors, &student_tensors, values.momentum)?;

        let (teacher_entropy, feature_std) = no_grad(|| {
            let entropy = -(&dino_targets * dino_targets.clamp_min(1e-12).log())
                .sum_dim_intlist([-1i64].as_slice(), false, Kind::Float)
                .mean(Kind::Float);
            let cls = out.cls.detach();
            let unit = &cls
                / cls
                    .norm_scalaropt_dim(2, [-1i64].as_slice(), true)
                    .clamp_min(1e-12);
            let std = unit
                .std_dim([0i64].as_slice(), true, false)
                .mean(Kind::Float);
            (entropy.double_value(&[]), std.double_value(&[]))
        });
        Ok(StepLosses {
            dino_local: dino_local.double_value(&[]),
            dino_global: dino_global.double_value(&[]),
            koleo: koleo.double_value(&[]),
            ibot: ibot.double_value(&[]),
            total: total_value,
            teacher_entropy,
            feature_std,
        })
    }
}
