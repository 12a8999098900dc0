//! DINOv2's resolution phases (`phases:`): from a fraction of the run on, the global crops (and,
//! if asked, the local crops) are cut at another size, as dinov2 ends its training with global
//! crops of 518 px instead of 224 px. The model keeps its parameters: its position embedding,
//! built for `img_size`, is interpolated (bicubic) to the patch grid of every other side, for the
//! student and the teacher alike, and the iBOT masks follow the grid of the global crops.
//!
//! A phase begins at iteration `ceil(from · steps)`, so which crops an iteration gets depends on
//! the iteration alone and a resumed run cuts the same crops as an uninterrupted one.

use dinoflow_vision::augment::{CropSpec, MultiCropConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::PretrainError;

/// One resolution phase: from iteration `ceil(from · steps)` until the next phase (or the end of
/// the run) the crops are cut at these sizes; everything else of `crops` stays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Where the phase begins, as the fraction of `steps` done: 0 < from < 1, increasing from one
    /// phase to the next (0.9: the last 10 % of the iterations).
    pub from: f64,
    /// Side of both global crops, in pixels (a multiple of the patch size; dinov2: 518).
    pub global_size: u32,
    /// Side of the local crops, in pixels (a multiple of the patch size); default: those of the
    /// phase before (dinov2 keeps them at 98).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_size: Option<u32>,
}

impl Phase {
    /// The first iteration of the phase in a run of `steps` iterations: `ceil(from · steps)`, a
    /// product within rounding of a whole number counting as that number (0.07 · 100 is 7, not 8).
    pub fn start(&self, steps: usize) -> usize {
        let x = self.from * steps as f64;
        let nearest = x.round();
        let first = if (x - nearest).abs() <= 1e-9 * x.abs().max(1.0) {
            nearest
        } else {
            x.ceil()
        };
        first.max(0.0) as usize
    }
}

/// The crops of every stretch of a run: from iteration 0 the recipe of `crops`, then one stretch
/// per phase.
#[derive(Debug, Clone, PartialEq)]
pub struct PhasePlan {
    /// (first iteration, crops), by first iteration.
    stretches: Vec<(usize, MultiCropConfig)>,
}

impl PhasePlan {
    /// The plan of a run of `steps` iterations with `crops` and `phases` (checked or not: the
    /// stretches keep the order of `phases`).
    pub fn new(crops: &MultiCropConfig, phases: &[Phase], steps: usize) -> Self {
        let mut stretches = vec![(0, crops.clone())];
        for phase in phases {
            let before = &stretches[stretches.len() - 1].1;
            let local = phase.local_size.unwrap_or(before.local.size);
            let crops = before.clone().with_sizes(phase.global_size, local);
            stretches.push((phase.start(steps), crops));
        }
        Self { stretches }
    }

    /// The stretch iteration `step` belongs to: 0 before the first phase, `i + 1` in phase `i`.
    pub fn index_at(&self, step: usize) -> usize {
        self.stretches
            .iter()
            .rposition(|(start, _)| *start <= step)
            .unwrap_or(0)
    }

    /// The crops of stretch `index` (see [`PhasePlan::index_at`]); the last one past the end.
    pub fn crops(&self, index: usize) -> &MultiCropConfig {
        let last = self.stretches.len() - 1;
        &self.stretches[index.min(last)].1
    }

    /// The crops of iteration `step`.
    pub fn crops_at(&self, step: usize) -> &MultiCropConfig {
        self.crops(self.index_at(step))
    }
}

/// Checks `phases` for a run of `steps` iterations whose crops are `crops` and whose patches
/// have side `patch`: `from` inside (0, 1) and increasing, every phase getting at least one
/// iteration, the sizes multiples of the patch size, the blur kernels still fitting.
pub(crate) fn check_phases(
    phases: &[Phase],
    crops: &MultiCropConfig,
    patch: u32,
    steps: usize,
) -> Result<(), PretrainError> {
    let plan = PhasePlan::new(crops, phases, steps);
    let mut before: Option<(f64, usize)> = None;
    for (index, phase) in phases.iter().enumerate() {
        let bad = |field: &'static str, message: String| {
            Err(PretrainError::Phase {
                index,
                field,
                message,
            })
        };
        let from = phase.from;
        if !(from > 0.0 && from < 1.0) {
            return bad(
                "from",
                format!(
                    "{from} is outside (0, 1): it is the fraction of `steps` done when the phase \
                     begins (0.9: the last 10 % of the iterations)"
                ),
            );
        }
        let start = phase.start(steps);
        match before {
            Some((earlier, _)) if from <= earlier => {
                return bad(
                    "from",
                    format!(
                        "{from} is not after `phases[{}].from` {earlier}: list the phases in the \
                         order they begin, with increasing `from`",
                        index - 1
                    ),
                );
            }
            Some((_, earlier)) if start == earlier => {
                return bad(
                    "from",
                    format!(
                        "{from} begins at iteration {start} of {steps}, as `phases[{}]` does, \
                         which would then never run: space the phases further apart or raise \
                         `steps`",
                        index - 1
                    ),
                );
            }
            None if start == 0 => {
                return bad(
                    "from",
                    format!(
                        "{from} begins at iteration 0 of {steps}, so the sizes of `crops` would \
                         never be used: raise `from`, or set the sizes in `crops` instead"
                    ),
                );
            }
            _ => {}
        }
        if start >= steps {
            return bad(
                "from",
                format!(
                    "{from} begins at iteration {start} of {steps}, after the last one, so the \
                     phase would never run: lower `from` or raise `steps`"
                ),
            );
        }
        before = Some((from, start));

        let phase_crops = plan.crops(index + 1);
        check_size(
            index,
            "global_size",
            phase.global_size,
            patch,
            &phase_crops.global,
        )?;
        if let Some(size) = phase.local_size {
            check_size(
                index,
                "local_size",
                size,
                patch,
                std::slice::from_ref(&phase_crops.local),
            )?;
        }
        phase_crops.validate().map_err(|e| PretrainError::Phase {
            index,
            field: if phase.local_size.is_some() {
                "local_size"
            } else {
                "global_size"
            },
            message: format!("the crops at these sizes: {e}"),
        })?;
    }
    Ok(())
}

/// Checks the size `size` given in `phases[index].field` for crops `specs` (already at that
/// size): a positive multiple of `patch`, and large enough for each spec's blur kernel.
fn check_size(
    index: usize,
    field: &'static str,
    size: u32,
    patch: u32,
    specs: &[CropSpec],
) -> Result<(), PretrainError> {
    let bad = |message: String| {
        Err(PretrainError::Phase {
            index,
            field,
            message,
        })
    };
    if size < patch || !size.is_multiple_of(patch) {
        let below = size / patch * patch;
        let hint = if below >= patch {
            format!("{below} or {}", below + patch)
        } else {
            format!("{patch} or more")
        };
        return bad(format!(
            "{size} px is not a positive multiple of the patch size {patch}: use {hint}"
        ));
    }
    let crop = if field == "global_size" {
        "crops.global"
    } else {
        "crops.local"
    };
    for (i, spec) in specs.iter().enumerate() {
        if spec.blur_kernel / 2 >= size {
            let name = if specs.len() > 1 {
                format!("{crop}[{i}]")
            } else {
                crop.to_string()
            };
            let fits = (spec.blur_kernel / 2 + 1).div_ceil(patch) * patch;
            return bad(format!(
                "{size} px is too small for the blur kernel of `{name}` ({}: its reflect padding \
                 needs kernel / 2 < size): use at least {fits} px, or a smaller \
                 `{name}.blur_kernel`",
                spec.blur_kernel
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(from: f64, global_size: u32) -> Phase {
        Phase {
            from,
            global_size,
            local_size: None,
        }
    }

    /// The crops of the tests: 12 px global and 8 px local, blur kernel 9.
    fn crops() -> MultiCropConfig {
        MultiCropConfig::dinov2().with_sizes(12, 8)
    }

    fn refused(phases: &[Phase], steps: usize) -> String {
        check_phases(phases, &crops(), 4, steps)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn no_phases_stay_out_of_the_canonical_config() {
        let parse = |v: serde_json::Value| {
            let c: crate::PretrainConfig = serde_json::from_value(v).expect("a config");
            serde_json::to_value(&c).expect("serialisable")
        };
        let plain = parse(serde_json::json!({"preset": "tiny-28", "steps": 8}));
        assert!(plain.get("phases").is_none(), "{plain}");
        let empty = parse(serde_json::json!({"preset": "tiny-28", "steps": 8, "phases": []}));
        assert_eq!(empty, plain);
        let phased = parse(serde_json::json!({
            "preset": "tiny-28", "steps": 8, "phases": [{"from": 0.75, "global_size": 20}]
        }));
        assert_eq!(
            phased["phases"],
            serde_json::json!([{"from": 0.75, "global_size": 20}])
        );
    }

    #[test]
    fn a_phase_begins_at_the_ceiling_of_its_fraction_of_the_run() {
        assert_eq!(phase(0.75, 20).start(8), 6);
        assert_eq!(phase(0.6, 20).start(8), 5);
        assert_eq!(phase(0.9, 20).start(125_000), 112_500);
        // 0.07 · 100 is 7.000000000000001 and 0.14 · 100 is 14.000000000000002 in floating
        // point: 7 and 14, not 8 and 15.
        assert_eq!(phase(0.07, 20).start(100), 7);
        assert_eq!(phase(0.14, 20).start(100), 14);
        assert_eq!(phase(0.29, 20).start(100), 29);
        assert_eq!(phase(0.01, 20).start(8), 1);
    }

    #[test]
    fn the_plan_gives_each_iteration_its_phase_crops() {
        let phases = [
            phase(0.5, 16),
            Phase {
                from: 0.75,
                global_size: 20,
                local_size: Some(12),
            },
        ];
        let plan = PhasePlan::new(&crops(), &phases, 8);
        let sizes: Vec<(u32, u32)> = (0..8)
            .map(|s| {
                let c = plan.crops_at(s);
                assert_eq!(c.global[0].size, c.global[1].size);
                (c.global[0].size, c.local.size)
            })
            .collect();
        assert_eq!(
            sizes,
            [
                (12, 8),
                (12, 8),
                (12, 8),
                (12, 8),
                (16, 8),
                (16, 8),
                (20, 12),
                (20, 12)
            ]
        );
        // Nothing but the sizes changes.
        let last = plan.crops_at(7);
        assert_eq!(last.clone().with_sizes(12, 8), crops());
        // No phases: the crops of `crops` throughout.
        let plain = PhasePlan::new(&crops(), &[], 8);
        assert_eq!(plain.crops_at(7), &crops());
        assert!(check_phases(&phases, &crops(), 4, 8).is_ok());
    }

    #[test]
    fn fractions_outside_the_run_or_out_of_order_are_refused() {
        for from in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            let e = refused(&[phase(from, 20)], 8);
            assert!(
                e.starts_with("`phases[0].from`: ") && e.contains("is outside (0, 1)"),
                "{e}"
            );
        }
        let e = refused(&[phase(0.8, 20), phase(0.5, 16)], 8);
        assert!(
            e.starts_with("`phases[1].from`: 0.5 is not after `phases[0].from` 0.8"),
            "{e}"
        );
        let e = refused(&[phase(0.5, 20), phase(0.5, 16)], 8);
        assert!(e.contains("is not after"), "{e}");
    }

    #[test]
    fn phases_that_would_never_run_are_refused() {
        // 0.9 of 8 begins at iteration 8: after the last.
        let e = refused(&[phase(0.9, 20)], 8);
        assert!(
            e.starts_with("`phases[0].from`: 0.9 begins at iteration 8 of 8, after the last one"),
            "{e}"
        );
        // 0.51 and 0.55 of 10 both begin at iteration 6: the first would never run.
        let e = refused(&[phase(0.51, 16), phase(0.55, 20)], 10);
        assert!(
            e.starts_with("`phases[1].from`: 0.55 begins at iteration 6 of 10, as `phases[0]`"),
            "{e}"
        );
        // So close to 0 that it begins at iteration 0: `crops`' sizes would never be used.
        let e = refused(&[phase(1e-12, 20)], 8);
        assert!(e.contains("begins at iteration 0 of 8"), "{e}");
    }

    #[test]
    fn sizes_off_the_patch_grid_or_too_small_for_the_blur_are_refused() {
        let e = refused(&[phase(0.5, 18)], 8);
        assert_eq!(
            e,
            "`phases[0].global_size`: 18 px is not a positive multiple of the patch size 4: use \
             16 or 20"
        );
        let e = refused(&[phase(0.5, 0)], 8);
        assert!(e.contains("0 px is not a positive multiple") && e.contains("use 4 or more"));
        // Kernel 9: reflect padding needs 9 / 2 < size.
        let e = refused(&[phase(0.5, 4)], 8);
        assert!(
            e.starts_with(
                "`phases[0].global_size`: 4 px is too small for the blur kernel of \
                           `crops.global[0]` (9"
            ) && e.contains("use at least 8 px"),
            "{e}"
        );
        let local = |size| Phase {
            from: 0.5,
            global_size: 20,
            local_size: Some(size),
        };
        let e = refused(&[local(10)], 8);
        assert!(
            e.starts_with("`phases[0].local_size`: 10 px is not a positive multiple"),
            "{e}"
        );
        let e = refused(&[local(4)], 8);
        assert!(
            e.starts_with(
                "`phases[0].local_size`: 4 px is too small for the blur kernel of \
                           `crops.local` (9"
            ),
            "{e}"
        );
    }
}
