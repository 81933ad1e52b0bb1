"""The diffusion recipe: one table per section (`[data]`, `[model]`, `[diffusion]`, `[train]`,
`[sample]`, `[text]`), each a dataclass below (`[prior]`: `config.prior`), validated field by
field (`core.build_section`) and then across fields (`Config.check`). `[data]` and `[train]`
are the tables every kind of recipe shares (the VAE and CLIP recipes use the same two classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inkfuse.config.core import Recipe, bounded, choice, listed
from inkfuse.config.prior import PriorConfig, check_prior
from inkfuse.errors import ConfigError

# The built-in shapes' words, here so that recipes naming them (data.withhold) are checked with the
# rest of the recipe; `data.shapes` draws them (class id = index of the kind).
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange")
SIGMA_REL_MAX = (1 / 12) ** 0.5  # σ_rel of EDM2's power-function EMA at γ = 0 (train.ema)


@dataclass
class DataConfig:
    name: str = choice(
        "shapes", "shapes", "mnist", "fashion-mnist", "cifar10", "folder", "npy",
        doc="dataset from the registry (`inkfuse data list`)",
    )
    path: str = field(default="", metadata={"doc": "image folder or .npy file (folder/npy)"})
    labels_path: str = field(default="", metadata={"doc": "labels .npy beside `path` (npy)"})
    split: str = choice("train", "train", "test")
    size: int = bounded(32, 8, 512, doc="images are resized to size x size")
    labels: str = choice(
        "class", "class", "context", "text", "clip-image", "none",
        doc="what the model is conditioned on: class ids, context vectors, captions (text), "
            "CLIP image embeddings of the training images (sampled from prompts), or nothing",
    )
    limit: int = bounded(0, 0, None, doc="use only the first N images (0 = all)")
    count: int = bounded(20000, 1, 10_000_000, doc="images to generate (shapes)")
    max_objects: int = bounded(1, 1, 2, doc="objects per image (shapes)")
    caption_dropout: float = bounded(
        0.0, 0.0, 1.0, doc="shapes: leave size, colour and position out of a training caption, "
                           "each with this probability, so short prompts work too")
    vae: str = field(default="", metadata={
        "doc": "VAE run dir: train on its latents (latent diffusion); empty = pixels"})
    low_res: int = bounded(0, 0, 512, doc="super-resolution: condition on the image shrunk to "
                                          "this size (0 = off)")
    holdout: float = bounded(0.0, 0.0, 0.9, doc="shapes: share of (kind, colour, position) "
                                                "combinations never drawn, kept for testing")
    withhold: list[str] = field(default_factory=list, metadata={
        "doc": "shapes: kinds or colours no image or caption ever shows, e.g. ['magenta'] "
               "(what textual inversion is measured on)"})
    hflip: bool = False
    crop_padding: int = bounded(0, 0, 64, doc="random crop after zero padding by this many px")


@dataclass
class ModelConfig:
    kind: str = choice(
        "unet", "unet", "plain-unet",
        doc="plain-unet has no time input (the course's first experiment)",
    )
    in_channels: int = bounded(0, 0, 64, doc="0 = from the data")
    out_channels: int = bounded(0, 0, 128, doc="0 = in_channels (set to twice that by "
                                               "diffusion.learn_variance)")
    size: int = bounded(0, 0, 4096, doc="side of what the U-Net denoises: 0 = data.size "
                                        "(pixels); the latent side with data.vae")
    cond_dim: int = bounded(0, 0, 100_000, doc="classes or context width; 0 = from the data")
    token_dim: int = bounded(0, 0, 100_000, doc="text token width to cross-attend to; "
                                                "0 = none (set from text.conditioning)")
    low_res_channels: int = bounded(0, 0, 64, doc="channels of the low-res input of a "
                                                  "super-resolution model (from data.low_res)")
    null_condition: str = choice("learned", "learned", "empty-prompt",
                                 doc="what a dropped condition becomes (text: the empty prompt)")
    base_channels: int = bounded(64, 4, 4096)
    channel_mult: list[int] = listed([1, 2, 2], doc="width multipliers of base_channels, one "
                                     "per level (each at least 1)", lo=1)
    blocks_per_level: int = bounded(1, 1, 8)
    attention_resolutions: list[int] = listed([], doc="feature-map sizes with self-attention",
                                              lo=1)
    head_dim: int = bounded(32, 4, 1024)
    norm: str = choice("group", "group", "batch")
    groups: int = bounded(8, 1, 256)
    activation: str = choice("silu", "silu", "gelu", "relu")
    down: str = choice("rearrange", "rearrange", "maxpool", "stride")
    up: str = choice("nearest-conv", "nearest-conv", "transposed")
    time_embedding: str = choice("sinusoidal", "sinusoidal", "linear")
    residual: bool = True
    dropout: float = bounded(0.0, 0.0, 0.9)


@dataclass
class DiffusionConfig:
    schedule: str = choice("cosine", "linear", "cosine", "sigmoid")
    timesteps: int = bounded(1000, 2, 100_000)
    beta_start: float = bounded(1e-4, 0.0, 1.0, doc="linear schedule only")
    beta_end: float = bounded(0.02, 0.0, 1.0, doc="linear schedule only")
    target: str = choice("eps", "eps", "x0", "v")
    loss_weighting: str = choice("none", "none", "min-snr")
    min_snr_gamma: float = bounded(5.0, 0.0, None)
    cond_drop_prob: float = bounded(0.1, 0.0, 1.0, doc="Bernoulli mask on the condition")
    low_res_noise: float = bounded(0.2, 0.0, 1.0, doc="noise-conditioning augmentation: the "
                                   "low-res input is noised up to this fraction of T")
    learn_variance: bool = field(default=False, metadata={
        "doc": "the U-Net also predicts the reverse step's variance, between β̃ and β, trained "
               "with L_hybrid = L_simple + vlb_weight · L_vlb (Nichol & Dhariwal 2021)"})
    vlb_weight: float = bounded(0.001, 0.0, 1.0, doc="λ of L_hybrid (learn_variance)")
    zero_terminal_snr: bool = field(default=False, metadata={
        "doc": "rescale the schedule so that ᾱ at the last step is exactly 0, pure noise as "
               "sampling assumes (Lin et al. 2024, Algorithm 1); needs target v or x0"})


@dataclass
class TrainConfig:
    """The `[train]` table of every recipe: how `inkfuse.train.loop` runs, whatever it trains."""

    steps: int = bounded(2000, 1, None)
    batch_size: int = bounded(64, 1, 1_000_000)
    grad_accum: int = bounded(1, 1, 1024)
    lr: float = bounded(1e-3, 0.0, 10.0)
    lr_schedule: str = choice("cosine", "cosine", "constant")
    warmup_steps: int = bounded(100, 0, None)
    weight_decay: float = bounded(0.0, 0.0, 10.0)
    grad_clip: float = bounded(1.0, 0.0, None, doc="max grad norm (0 = off)")
    ema_decay: float = bounded(0.999, 0.0, 1.0, doc="0 = no moving average: the final "
                                                   "weights are the last step's")
    precision: str = choice("fp32", "fp32", "bf16", "auto",
                            doc="auto = bf16 where the hardware has it (AVX512_BF16/AMX, "
                                "CUDA), else fp32")
    channels_last: bool = False  # measured slower for small U-Nets on CPU (benchmarks/README.md)
    compile: bool = False
    device: str = choice("auto", "auto", "cpu", "cuda")
    seed: int = bounded(0, 0, 2**63 - 1)
    max_minutes: float = bounded(0.0, 0.0, None, doc="stop cleanly after this long (0 = off)")
    clock: str = choice("wall", "wall", "cpu", doc="what max_minutes and train_seconds count: "
                        "wall-clock time, or this process's CPU time (equal budgets of compute "
                        "on a shared machine; one thread's CPU time is a quiet core's wall clock)")
    checkpoint_every: int = bounded(500, 1, None)
    log_every: int = bounded(10, 1, None)
    eval_every: int = bounded(0, 0, None, doc="every this many steps (and at the end), score "
                              "eval_n samples of the EMA weights into log.jsonl and loss.png "
                              "with the metric that fits the data: fd_cls (and accuracy) for "
                              "mnist / fashion-mnist, the shapes checker's accuracy for "
                              "class-conditional shapes, else FID (0 = off). Scoring time is "
                              "not training time: max_minutes does not count it")
    eval_n: int = bounded(128, 2, 100_000, doc="samples per in-training score (the recipe's "
                                               "[sample] sampler and steps, a fixed seed)")
    ema_snapshots_every: int = bounded(0, 0, None, doc="post-hoc EMA (Karras et al. 2024): "
                                       "keep power-function EMAs of the widths ema_sigma_rels "
                                       "and save them every this many steps (and at the end) "
                                       "into RUN/ema_snapshots/, for `inkfuse ema RUN --sweep` "
                                       "(0 = off). Each save is a copy of the weights per "
                                       "width: a tenth of train.steps gives 10 to 20 of them")
    ema_sigma_rels: list[float] = listed([0.05, 0.10], doc="widths σ_rel of the post-hoc EMAs, "
                                         "each in (0, 0.2887), as EDM2's two")


@dataclass
class SampleConfig:
    sampler: str = field(default="ddim", metadata={"doc": "see `inkfuse sample --help`"})
    steps: int = bounded(50, 1, 100_000)
    eta: float = bounded(0.0, 0.0, 1.0)
    guidance: float = bounded(2.0, 0.0, 100.0, doc="CFG weight w: eps_u + w (eps_c - eps_u)")
    guidance_rescale: float = bounded(0.0, 0.0, 1.0)
    thresholding: str = choice("none", "none", "static", "dynamic",
                               doc="x̂0 after guidance: as predicted, clipped to [-1, 1], or "
                                   "Imagen's dynamic thresholding (pixel models only)")
    threshold_percentile: float = bounded(0.995, 0.5, 1.0, doc="dynamic thresholding's p")
    per_class: int = bounded(8, 1, 64, doc="grid columns per class in training grids")
    low_res_noise: float = bounded(0.05, 0.0, 1.0, doc="noise level of the low-res input when "
                                   "upsampling, as a fraction of T")
    prompts: list[str] = listed([], doc="rows of a text model's sample grids "
                                        "(default: 8 training captions)")


@dataclass
class TextConfig:
    encoder: str = field(default="", metadata={
        "doc": "CLIP or text-LM run dir, or open_clip:MODEL:WEIGHTS; empty = train one into "
               "RUN/clip (text.kind)"})
    conditioning: str = choice(
        "pooled", "pooled", "cross-attention", "both",
        doc="pooled embedding into every block (the course), token features through "
            "cross-attention (latent diffusion), or both")
    kind: str = choice(
        "clip", "clip", "lm",
        doc="the text encoder trained into RUN/clip when encoder is empty: a CLIP on the "
            "captions and images, or a masked language model on the captions alone (Imagen)")
    clip_steps: int = bounded(1500, 1, None,
                              doc="steps of the text encoder trained when encoder is empty")
    hard_negatives: int = bounded(
        0, 0, 4, doc="hard negatives per image of the CLIP trained when encoder is empty "
                     "(NegCLIP: attributes swapped between objects, relation reversed); "
                     "unused with a given encoder")


@dataclass
class Config(Recipe):
    """A diffusion recipe."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    text: TextConfig = field(default_factory=TextConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)  # unCLIP (config.prior)

    def check(self) -> None:
        _check_consistency(self)


from_dict = Config.from_dict  # a diffusion recipe from nested dicts (TOML tables, config.json)


def check_data(d: DataConfig) -> None:
    """The rules of a [data] table that its fields' ranges cannot express (every model type)."""
    if d.name in ("folder", "npy") and not d.path:
        raise ConfigError(f"data.name = {d.name!r} needs data.path "
                          "(set it with --set data.path=...)")
    if d.name != "shapes" and (d.max_objects != 1 or d.caption_dropout or d.holdout
                               or d.withhold):
        raise ConfigError("data.max_objects, caption_dropout, holdout and withhold apply only "
                          "to data.name = 'shapes'")
    for word in d.withhold:
        if word not in (*SHAPES, *COLOURS):
            raise ConfigError(f"data.withhold: {word!r} is not a shapes kind or colour; pick "
                              f"from {', '.join((*SHAPES, *COLOURS))}")
    if len(set(SHAPES) - set(d.withhold)) < 1 or len(set(COLOURS) - set(d.withhold)) < 2:
        raise ConfigError("data.withhold leaves too little to draw: keep at least one kind "
                          "and two colours")


def check_train(tc: TrainConfig) -> None:
    """The post-hoc EMA widths: γ > 0 (σ_rel < sqrt(1/12), EDM2 eq. 3), at least two distinct
    ones (a least-squares fit needs a basis), each its own snapshot file name."""
    if not tc.ema_snapshots_every:
        return
    rels = tc.ema_sigma_rels
    bad = [r for r in rels if not 0 < r < SIGMA_REL_MAX]
    if bad:
        raise ConfigError(f"train.ema_sigma_rels = {rels}: {bad[0]:g} is outside (0, "
                          f"{SIGMA_REL_MAX:.4f}); EDM2 keeps 0.05 and 0.10")
    if len({f"{r:g}" for r in rels}) != len(rels) or len(rels) < 2:
        raise ConfigError(f"train.ema_sigma_rels = {rels}: give at least two different widths, "
                          "e.g. [0.05, 0.10]")


def check_diffusion(dc: DiffusionConfig) -> None:
    """With zero_terminal_snr, x_T = ε at the last step holds no trace of x_0: an ε-network
    there has nothing to regress but its input, and x_0 = (x_T − sqrt(1 − ᾱ) ε̂) / sqrt(ᾱ)
    divides by 0. Lin et al. 2024 train with v instead (x_0 would do); diffusers leaves ε
    allowed and only cuts ᾱ_T to 2⁻²⁴ in its Euler scheduler, which hides the division but not
    the problem, so it is refused here."""
    if dc.zero_terminal_snr and dc.target == "eps":
        raise ConfigError("diffusion.zero_terminal_snr = true makes the last step pure noise, "
                          "where an eps target is undefined: set diffusion.target = 'v' "
                          "(as Lin et al. 2024) or 'x0'")


def _check_consistency(config: Config) -> None:
    """Cross-field rules that a single field's range cannot express."""
    m, d = config.model, config.data
    check_data(d)
    check_diffusion(config.diffusion)
    check_train(config.train)
    check_prior(config.prior, d.labels)
    if config.train.eval_every and d.low_res:
        raise ConfigError("train.eval_every does not score super-resolution runs (data.low_res): "
                          "their samples need low-res inputs to upsample; set train.eval_every "
                          "= 0")
    levels = len(m.channel_mult)
    if levels < 1:
        raise ConfigError("model.channel_mult needs at least one level, e.g. [1, 2, 2]")
    side, what = (m.size, "the latent side") if m.size else (d.size, "data.size")
    if side % (2 ** (levels - 1)):
        raise ConfigError(
            f"{what} = {side} must be divisible by 2^(levels-1) = {2 ** (levels - 1)} "
            f"for model.channel_mult with {levels} levels"
        )
    check_unet_shapes(m, None if d.vae and not m.size else side)
    cross = m.token_dim or (d.labels == "text" and config.text.conditioning != "pooled")
    if cross and not m.attention_resolutions:
        raise ConfigError("cross-attention lives in the attention levels: set "
                          "model.attention_resolutions, e.g. [8, 4]")
    if d.low_res and (d.low_res >= d.size or d.size % d.low_res):
        raise ConfigError(f"data.low_res = {d.low_res} must divide data.size = {d.size} and be "
                          "smaller, e.g. 16 for 64")
    if d.vae and (d.hflip or d.crop_padding or d.low_res):
        raise ConfigError("data.vae (latent diffusion) works without data.hflip, "
                          "data.crop_padding and data.low_res: set them to their defaults")
    if d.vae and config.sample.thresholding != "none":
        raise ConfigError("sample.thresholding is for pixel models: latents have no [-1, 1] "
                          "range to clip to; set it to 'none'")
    if config.text.kind == "lm" and (config.text.hard_negatives or d.labels == "clip-image"):
        raise ConfigError("text.kind = 'lm' trains a text-only encoder: it has no image "
                          "embeddings (data.labels = 'clip-image') and no contrastive negatives "
                          "(text.hard_negatives); use text.kind = 'clip'")
    if config.text.hard_negatives and not config.text.encoder and d.name != "shapes":
        raise ConfigError("text.hard_negatives edits the scenes of shapes captions, and this "
                          f"run's CLIP would train on data.name = {d.name!r}: set "
                          "text.hard_negatives = 0 (it is unused when text.encoder is given)")
    if d.labels == "clip-image" and config.text.conditioning != "pooled":
        raise ConfigError("data.labels = 'clip-image' conditions on one embedding per image: "
                          "use text.conditioning = 'pooled'")
    gone = [(p, w) for p in config.sample.prompts for w in d.withhold if w in p.lower().split()]
    if gone:
        prompt, word = gone[0]
        raise ConfigError(f"sample.prompts: {prompt!r} asks for {word!r}, which data.withhold "
                          "keeps out of every caption; drop it, e.g. --set "
                          "\"sample.prompts=['a red circle']\"")


def check_unet_shapes(m: ModelConfig, side: int | None) -> None:
    """What `nn.unet.UNet` needs to build the network it was asked for, refused here in one line
    rather than as a shape error at step 1 (or not at all: an attention size that no level has
    used to train a U-Net without attention). `side` is the side the U-Net denoises; None while
    it is unknown (latent diffusion before the VAE is read), when the size rules wait for the
    second check that `train.diffusion.resolve` makes with the latent side filled in."""
    widths = [m.base_channels * mult for mult in m.channel_mult]  # down and up path alike
    if m.norm == "group":
        for width in widths:
            if width % m.groups:
                raise ConfigError(
                    f"model.base_channels * channel_mult = {width} is not divisible "
                    f"by model.groups = {m.groups}"
                )
    if m.time_embedding == "sinusoidal" and m.kind == "unet" and m.base_channels % 2:
        raise ConfigError(f"model.base_channels = {m.base_channels} must be even for the "
                          "sinusoidal time embedding (sin and cos halves); use an even width")
    if not m.attention_resolutions:
        return
    attended: dict[int, str] = {}  # width -> where it is attended first
    if side is not None:
        sizes = [side // 2**level for level in range(len(widths))]
        missing = [r for r in m.attention_resolutions if r not in sizes]
        if missing:
            raise ConfigError(
                f"model.attention_resolutions = {m.attention_resolutions}: the U-Net's levels "
                f"are {', '.join(map(str, sizes))} px, so {', '.join(map(str, missing))} would "
                "get no attention; list sizes from those")
        for size, width in zip(sizes, widths, strict=True):
            if size in m.attention_resolutions:
                attended.setdefault(width, f"the {size} px level")
    attended.setdefault(widths[-1], "the mid block")  # which attends at the deepest width
    for width, where in attended.items():
        if width % m.head_dim:
            fits = [h for h in (4, 8, 16, 32, 64) if all(w % h == 0 for w in attended)]
            hint = f", e.g. {fits[-1]}" if fits else ""
            raise ConfigError(
                f"model.head_dim = {m.head_dim} does not divide the width {width} of {where} "
                f"(base_channels * channel_mult); attention splits the width into heads of "
                f"head_dim channels: pick a head_dim that divides every attended width{hint}")
