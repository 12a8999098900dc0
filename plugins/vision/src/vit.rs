//! The DINOv2 ViT (dinov2.md §2.7) with timm's parameter names, so timm/DINOv2 checkpoints load as
//! they are: pre-norm blocks with LayerScale and drop-path, MLP or SwiGLU feed-forward, attention
//! through `scaled_dot_product_attention`, cls and register tokens, and a learned position
//! embedding that is interpolated (bicubic, antialiased, as timm) to other input sizes.

use tch::nn::{self, Module};
use tch::{Kind, TchError, Tensor};

use crate::config::{Ffn, VitConfig};
use crate::error::VisionError;

/// What the backbone returns for a batch of B images.
#[derive(Debug)]
pub struct VitOutput {
    /// Final-norm cls token, (B, D).
    pub cls: Tensor,
    /// Final-norm register tokens, (B, R, D) (R may be 0).
    pub registers: Tensor,
    /// Final-norm patch tokens, (B, N, D), row-major over the patch grid.
    pub patches: Tensor,
}

impl VitOutput {
    /// Splits normed tokens (B, 1 + R + N, D) into cls, registers and patches.
    fn split(tokens: &Tensor, registers: i64) -> Self {
        Self {
            cls: tokens.select(1, 0),
            registers: tokens.narrow(1, 1, registers),
            patches: tokens.narrow(1, 1 + registers, tokens.size()[1] - 1 - registers),
        }
    }
}

struct Attention {
    qkv: nn::Linear,
    proj: nn::Linear,
    heads: i64,
}

impl Attention {
    fn new(p: nn::Path, dim: i64, heads: i64) -> Self {
        Self {
            qkv: nn::linear(&p / "qkv", dim, 3 * dim, linear_init()),
            proj: nn::linear(&p / "proj", dim, dim, linear_init()),
            heads,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.proj.forward(&self.mix(x))
    }

    /// Multi-head attention before the output projection: (B, N, D) → (B, N, D).
    fn mix(&self, x: &Tensor) -> Tensor {
        let (b, n, d) = x.size3().expect("tokens are (B, N, D)");
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, n, 3, self.heads, d / self.heads])
            .permute([2, 0, 3, 1, 4]);
        // unbind, not three selects: the backward of a select zero-fills a gradient the size of
        // the whole qkv tensor, three times per block.
        let [q, k, v]: [Tensor; 3] = qkv
            .unbind(0)
            .try_into()
            .expect("qkv has 3 as its first dimension");
        let out = Tensor::scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, false, None, false,
        );
        out.transpose(1, 2).reshape([b, n, d])
    }
}

enum FeedForward {
    Mlp { fc1: nn::Linear, fc2: nn::Linear },
    SwiGlu { fc1: nn::Linear, fc2: nn::Linear },
}

impl FeedForward {
    fn new(p: nn::Path, dim: i64, ffn: Ffn) -> Self {
        match ffn {
            Ffn::Mlp { hidden } => Self::Mlp {
                fc1: nn::linear(&p / "fc1", dim, hidden, linear_init()),
                fc2: nn::linear(&p / "fc2", hidden, dim, linear_init()),
            },
            Ffn::Swiglu { hidden } => Self::SwiGlu {
                fc1: nn::linear(&p / "fc1", dim, 2 * hidden, linear_init()),
                fc2: nn::linear(&p / "fc2", hidden, dim, linear_init()),
            },
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Self::Mlp { fc1, fc2 } => fc2.forward(&fc1.forward(x).gelu("none")),
            Self::SwiGlu { fc1, fc2 } => {
                let h = fc1.forward(x).chunk(2, -1);
                fc2.forward(&(h[0].silu() * &h[1]))
            }
        }
    }
}

struct Block {
    norm1: nn::LayerNorm,
    attn: Attention,
    ls1: Tensor,
    norm2: nn::LayerNorm,
    mlp: FeedForward,
    ls2: Tensor,
    drop_path: f64,
}

impl Block {
    fn new(p: nn::Path, c: &VitConfig) -> Self {
        let d = c.embed_dim;
        let gamma = |name: &str| (&p / name).var("gamma", &[d], nn::Init::Const(c.layerscale));
        Self {
            norm1: nn::layer_norm(&p / "norm1", vec![d], layer_norm_config()),
            attn: Attention::new(&p / "attn", d, c.num_heads),
            ls1: gamma("ls1"),
            norm2: nn::layer_norm(&p / "norm2", vec![d], layer_norm_config()),
            mlp: FeedForward::new(&p / "mlp", d, c.ffn),
            ls2: gamma("ls2"),
            drop_path: c.drop_path,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let a = self.attn.forward(&self.norm1.forward(x)) * &self.ls1;
        let x = x + drop_path(&a, self.drop_path, train, None);
        let f = self.mlp.forward(&self.norm2.forward(&x)) * &self.ls2;
        &x + drop_path(&f, self.drop_path, train, None)
    }

    /// The block's output for some of its tokens only: `rows` index the flattened (B·N) tokens
    /// of `x` (B, N, D); the result is (rows, D). Every token still serves as a key and value,
    /// so the rows equal those of [`Block::forward`]; the projection and the feed-forward run
    /// on the chosen rows alone.
    fn forward_rows(&self, x: &Tensor, rows: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let (b, n, d) = x.size3()?;
        let image_of_row = rows.f_floor_divide_scalar(n)?;
        let samples = Some((&image_of_row, b));
        let mixed = self
            .attn
            .mix(&self.norm1.forward(x))
            .reshape([-1, d])
            .f_index_select(0, rows)?;
        let x = x.reshape([-1, d]).f_index_select(0, rows)?;
        let a = self.attn.proj.forward(&mixed) * &self.ls1;
        let x = &x + drop_path(&a, self.drop_path, train, samples);
        let f = self.mlp.forward(&self.norm2.forward(&x)) * &self.ls2;
        Ok(&x + drop_path(&f, self.drop_path, train, samples))
    }
}

/// Stochastic depth: in training, drops the residual of a random subset of samples (rate `rate`)
/// and rescales the kept ones by 1 / (1 − rate). DINOv2 computes the residual only on the kept
/// subset for speed; the expectation and the gradients are the same. The samples are the first
/// dimension of `residual`, or, given `(image_of_row, samples)`, `residual` is (rows, D) and
/// `image_of_row` names the sample of each row.
fn drop_path(residual: &Tensor, rate: f64, train: bool, rows: Option<(&Tensor, i64)>) -> Tensor {
    if !train || rate <= 0.0 {
        return residual.shallow_clone();
    }
    let keep = 1.0 - rate;
    let options = (residual.kind(), residual.device());
    let mask = match rows {
        None => Tensor::rand([residual.size()[0], 1, 1], options),
        Some((image_of_row, samples)) => Tensor::rand([samples], options)
            .index_select(0, image_of_row)
            .unsqueeze(-1),
    };
    residual * mask.lt(keep).to_kind(residual.kind()) / keep
}

fn linear_init() -> nn::LinearConfig {
    nn::LinearConfig {
        ws_init: trunc_normal(),
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    }
}

fn layer_norm_config() -> nn::LayerNormConfig {
    nn::LayerNormConfig {
        eps: 1e-6,
        ..Default::default()
    }
}

/// trunc_normal(std 0.02) in [−2, 2] as timm (the bounds are absolute, so effectively a normal).
fn trunc_normal() -> nn::Init {
    nn::Init::Randn {
        mean: 0.0,
        stdev: 0.02,
    }
}

/// What a training loss reads of a forward pass: see [`Vit::forward_selected`].
#[derive(Debug)]
pub struct SelectedTokens {
    /// Final-norm cls token, (B, D).
    pub cls: Tensor,
    /// The chosen final-norm patch tokens, (M, D), in the order they were asked for.
    pub patches: Tensor,
}

/// A DINOv2 ViT. Build it inside a [`nn::VarStore`]; the variables get timm's names.
pub struct Vit {
    config: VitConfig,
    patch_embed: nn::Conv2D,
    cls_token: Tensor,
    reg_token: Option<Tensor>,
    pos_embed: Tensor,
    mask_token: Option<Tensor>,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
}

impl std::fmt::Debug for Vit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vit({:?})", self.config)
    }
}

impl Vit {
    /// Creates the variables under `p` (randomly initialised as DINOv2 does) and the model.
    pub fn new(p: &nn::Path, config: &VitConfig) -> Result<Self, VisionError> {
        config.validate()?;
        let d = config.embed_dim;
        let patch_embed = nn::conv2d(
            p / "patch_embed" / "proj",
            config.in_chans,
            d,
            config.patch_size,
            nn::ConvConfig {
                stride: config.patch_size,
                ..Default::default()
            },
        );
        let tiny = nn::Init::Randn {
            mean: 0.0,
            stdev: 1e-6,
        };
        let cls_token = p.var("cls_token", &[1, 1, d], tiny);
        let reg_token =
            (config.registers > 0).then(|| p.var("reg_token", &[1, config.registers, d], tiny));
        let positions = config.grid() * config.grid() + i64::from(config.registers == 0);
        let pos_embed = p.var("pos_embed", &[1, positions, d], trunc_normal());
        let mask_token = config
            .mask_token
            .then(|| p.var("mask_token", &[1, d], nn::Init::Const(0.0)));
        let blocks = (0..config.depth)
            .map(|i| Block::new(p / "blocks" / i, config))
            .collect();
        let norm = nn::layer_norm(p / "norm", vec![d], layer_norm_config());
        Ok(Self {
            config: config.clone(),
            patch_embed,
            cls_token,
            reg_token,
            pos_embed,
            mask_token,
            blocks,
            norm,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// Checks an input batch: (B, in_chans, H, W) float with H and W multiples of the patch size.
    fn check_input(&self, images: &Tensor) -> Result<(i64, i64), VisionError> {
        let size = images.size();
        let c = &self.config;
        let ok = size.len() == 4
            && size[0] > 0
            && size[1] == c.in_chans
            && size[2] >= c.patch_size
            && size[3] >= c.patch_size
            && size[2] % c.patch_size == 0
            && size[3] % c.patch_size == 0;
        if !ok {
            return Err(VisionError::InputShape {
                expected: format!(
                    "(batch, {}, H, W) with H and W positive multiples of the patch size {}",
                    c.in_chans, c.patch_size
                ),
                got: format!("{size:?}"),
            });
        }
        if !matches!(images.kind(), Kind::Float | Kind::BFloat16 | Kind::Half) {
            return Err(VisionError::InputShape {
                expected: "a floating-point tensor".into(),
                got: format!("{:?}", images.kind()),
            });
        }
        Ok((size[2] / c.patch_size, size[3] / c.patch_size))
    }

    /// The position embedding of the patches resized to a `gh`×`gw` grid (bicubic, antialiased,
    /// align_corners false, as timm's `resample_abs_pos_embed`), with the cls entry in front when
    /// the layout has one.
    fn pos_embed_for(&self, gh: i64, gw: i64) -> Tensor {
        let g = self.config.grid();
        if gh == g && gw == g {
            return self.pos_embed.shallow_clone();
        }
        let prefix = i64::from(self.config.registers == 0);
        let d = self.config.embed_dim;
        let patches = self
            .pos_embed
            .narrow(1, prefix, g * g)
            .to_kind(Kind::Float)
            .reshape([1, g, g, d])
            .permute([0, 3, 1, 2])
            .internal_upsample_bicubic2d_aa([gh, gw], false, None, None)
            .permute([0, 2, 3, 1])
            .reshape([1, gh * gw, d])
            .to_kind(self.pos_embed.kind());
        if prefix == 1 {
            Tensor::cat(&[self.pos_embed.narrow(1, 0, 1), patches], 1)
        } else {
            patches
        }
    }

    /// Patch embedding, optional iBOT masking (`masks`: (B, N) bool, true = replace by the mask
    /// token), cls and register tokens and the position embedding: (B, 1 + R + N, D).
    pub fn prepare_tokens(
        &self,
        images: &Tensor,
        masks: Option<&Tensor>,
    ) -> Result<Tensor, VisionError> {
        let (gh, gw) = self.check_input(images)?;
        let b = images.size()[0];
        let mut x = self
            .patch_embed
            .forward(images)
            .flatten(2, 3)
            .transpose(1, 2);
        if let Some(masks) = masks {
            let token = self.mask_token.as_ref().ok_or_else(|| {
                VisionError::Config("masked input needs a model built with mask_token: true".into())
            })?;
            if masks.size() != [b, gh * gw] {
                return Err(VisionError::InputShape {
                    expected: format!("masks of shape [{b}, {}]", gh * gw),
                    got: format!("{:?}", masks.size()),
                });
            }
            x = token
                .to_kind(x.kind())
                .unsqueeze(0)
                .where_self(&masks.unsqueeze(-1), &x);
        }
        let pos = self.pos_embed_for(gh, gw);
        let cls = self.cls_token.expand([b, -1, -1], false);
        Ok(match &self.reg_token {
            None => Tensor::cat(&[cls, x], 1) + pos,
            Some(reg) => Tensor::cat(&[cls, reg.expand([b, -1, -1], false), x + pos], 1),
        })
    }

    /// The full forward pass: final-norm cls, register and patch tokens.
    pub fn forward(
        &self,
        images: &Tensor,
        masks: Option<&Tensor>,
        train: bool,
    ) -> Result<VitOutput, VisionError> {
        let mut x = self.prepare_tokens(images, masks)?;
        for block in &self.blocks {
            x = block.forward(&x, train);
        }
        Ok(VitOutput::split(
            &self.norm.forward(&x),
            self.config.registers,
        ))
    }

    /// The final-norm cls token of every image and the final-norm patch tokens at `patches`
    /// (flat indices into the (B·N) patch grid, image-major; none: no patch tokens), equal to
    /// those of [`Vit::forward`]. The last block runs its output projection and feed-forward on
    /// these tokens alone (every token still attends and is attended to), which is all DINO and
    /// iBOT read of a training crop: the cls tokens and the masked patches.
    pub fn forward_selected(
        &self,
        images: &Tensor,
        masks: Option<&Tensor>,
        patches: Option<&Tensor>,
        train: bool,
    ) -> Result<SelectedTokens, VisionError> {
        let mut x = self.prepare_tokens(images, masks)?;
        let (b, t, _) = x.size3()?;
        let (last, first) = self
            .blocks
            .split_last()
            .ok_or_else(|| VisionError::Config("the model has no blocks".into()))?;
        for block in first {
            x = block.forward(&x, train);
        }
        let cls_rows = Tensor::arange(b, (Kind::Int64, x.device())) * t;
        let rows = match patches {
            None => cls_rows,
            Some(p) => {
                let prefix = 1 + self.config.registers;
                let n = t - prefix;
                let patch_rows = p.f_floor_divide_scalar(n)? * t + prefix + p.f_remainder(n)?;
                Tensor::cat(&[cls_rows, patch_rows], 0)
            }
        };
        let out = self.norm.forward(&last.forward_rows(&x, &rows, train)?);
        let m = out.size()[0] - b;
        Ok(SelectedTokens {
            cls: out.narrow(0, 0, b),
            patches: out.narrow(0, b, m),
        })
    }

    /// The outputs of the last `n` blocks, each passed through the final norm (DINOv2's
    /// `get_intermediate_layers(n, norm=True)`), oldest first; used by the linear probe.
    pub fn last_layers(&self, images: &Tensor, n: usize) -> Result<Vec<VitOutput>, VisionError> {
        let depth = self.blocks.len();
        if n == 0 || n > depth {
            return Err(VisionError::Config(format!(
                "asked for the last {n} layers of a {depth}-block model"
            )));
        }
        let mut x = self.prepare_tokens(images, None)?;
        let mut out = Vec::with_capacity(n);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, false);
            if i >= depth - n {
                out.push(VitOutput::split(
                    &self.norm.forward(&x),
                    self.config.registers,
                ));
            }
        }
        Ok(out)
    }
}
