"""Textual inversion (Gal et al. 2022, "An Image is Worth One Word") as a training kind: a new
word for a concept a text run never saw, learned from a few images, everything else frozen.

    config = InvertConfig.from_dict({"invert": {"images": "mine/", "token": "<magenta-ish>",
                                                "init": "red"}})
    invert("runs/text", config)        # -> runs/text/tokens/magenta-ish.safetensors
    sample(load_run("runs/text"), 8, prompts=["a <magenta-ish> circle above a red square"])

The token gets one new row v of the text tower's token embedding (`TextConditioner.add_token`),
started from the embedding of `invert.init`, and v is the only thing trained (Gal et al. eq. 2):
v* = argmin_v E ||ε − ε_θ(x_t, t, c(y; v))||², through the run's own `Denoiser.loss` (its
schedule, target and weighting; t uniform and fresh noise from each step's generator) on the
images x_0 with captions y: the folder's captions.csv (each must name the token), else
templates ("a <tok>", ...) drawn at random per example. The U-Net and the text encoder are
frozen and stay bit-identical; the caption is encoded with grad, so the gradient reaches v
through the text tower. No caption is dropped for guidance: the empty prompt is not learned.

On the shared loop, it logs, checkpoints into RUN/tokens/<slug>/ and resumes exactly; at the end
the row is written to RUN/tokens/<slug>.safetensors (`artifacts.tokens`), which every later
`load_run` of the run reads.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from inkfuse.artifacts import checkpoint
from inkfuse.artifacts import tokens as learned
from inkfuse.artifacts.run import Run, load_run
from inkfuse.config import InvertConfig, replace
from inkfuse.data.subject import CAPTION_FILES, subject_images
from inkfuse.diffusion import Condition, Denoiser
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.text.conditioner import TextConditioner
from inkfuse.text.tokenizer import normalize
from inkfuse.train import loop
from inkfuse.train.loop import Kind

# captions of uncaptioned images (Gal et al. use a list of such templates); those with a word the
# text encoder never read are left out, and "{}" alone always stays
TEMPLATES = ("a {}", "a photo of a {}", "a picture of a {}", "a drawing of a {}", "{}")
MEAN_INIT = "the mean of the known words"  # what the token file records for an empty init


class TokenRow(nn.Module):
    """The one trainable tensor, the new token's embedding row [width] (the same Parameter the
    text encoder's `TokenTable` reads for the token's id). Calling it encodes token ids with
    grad, so the loss reaches the row and nothing else."""

    def __init__(self, text: TextConditioner, row: nn.Parameter):
        super().__init__()
        self.vector = row
        self.text = text

    def forward(self, ids: Tensor, mask: Tensor) -> Condition:
        return self.text.encode_ids(ids, mask, grad=True)


def check_invertible(run: Run) -> None:
    """Refuse a run that no word can steer: one not conditioned on text prompts (a class,
    context or CLIP-image run), or a super-resolution stage."""
    labels = run.config.data.labels
    if labels != "text":
        raise ConfigError(f"{run.dir} is conditioned on data.labels = {labels!r}, not on text "
                          "prompts, so it has no words to add one to; textual inversion needs "
                          "a text run (e.g. recipe shapes-text)")
    if run.config.data.low_res:
        raise ConfigError(f"{run.dir} is a super-resolution stage; learn the token for the "
                          "base run of the cascade, which draws from the prompt")


def initial_row(text: TextConditioner, init: str) -> Tensor:
    """The row the token starts from: the embedding of `init` (a known word, or words: their
    mean), or with no init the mean embedding of every word the text encoder read."""
    if not init.strip():
        return text.embedding_of(" ".join(sorted(text.tokenizer.words)))
    unknown = text.tokenizer.unknown_words(init)
    if unknown:
        raise ConfigError(f"--init {init!r}: the text encoder never read {', '.join(unknown)}; "
                          "start from one of its words (a coarse description of the concept, "
                          "e.g. 'red' for a new colour), or leave --init out")
    return text.embedding_of(init)


class InversionKind(Kind):
    label = "invert"
    sections = ("invert",)

    def setup(self) -> None:
        c, device = self.config.invert, self.device
        self.run = run = load_run(learned.run_of(self.run_dir), device=device, tokens=False)
        check_invertible(run)
        run.net.requires_grad_(False)
        self.text = text = run.text
        self.row = nn.Parameter(initial_row(text, c.init).to(text.blank_row()))
        text.add_token(c.token, self.row)  # refuses a token that cannot be one, in one line
        data = subject_images(c.images, run.config.data.size, run.image_shape[0], prompt="")
        if any((Path(c.images) / name).is_file() for name in CAPTION_FILES):
            texts = [[t] for t in captions(data.captions, c.images, c.token)]
        else:
            texts = [templates(text, c.token)] * len(data)
        for t in dict.fromkeys(t for options in texts for t in options):
            text.check(t)
        # [N, K, L]: K captions of each image, one drawn per example
        ids, mask = text.tokenize([t for options in texts for t in options])
        self.ids, self.mask = (t.view(len(texts), len(texts[0]), -1).to(device)
                               for t in (ids, mask))
        self.data = data.to(device)
        if run.latent is not None:  # as the run trained: z drawn from the VAE's posterior
            self.z_mean, self.z_std = run.latent.encode_dataset(self.data.images)
        # each image once per batch slot and epoch, so a batch may hold more than the folder
        self.n, self.size = len(data), len(data) * self.config.train.batch_size

    def make_model(self) -> nn.Module:
        return TokenRow(self.text, self.row)

    def batch(self, idx: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Images (or latents) x_0 [B, C, H, W] and one caption of each, as ids and mask
        [B, L]."""
        i = (idx % self.n).to(self.device)
        if self.run.latent is not None:
            x0 = self.z_mean[i] + self.z_std[i] * torch.randn(
                self.z_mean[i].shape, generator=gen, device=self.device)
        else:
            x0 = self.data.to_float(i)
        v = torch.randint(self.ids.shape[1], (len(i),), generator=gen, device=self.device)
        return x0, self.ids[i, v], self.mask[i, v]

    def loss(self, forward: nn.Module, batch: tuple[Tensor, Tensor, Tensor],
             gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        x0, ids, mask = batch
        run, dc = self.run, self.run.config.diffusion
        denoiser = Denoiser(run.net, run.schedule, dc.target, null=run.null,
                            learn_variance=dc.learn_variance, vlb_weight=dc.vlb_weight,
                            discrete=not run.config.data.vae)
        return denoiser.loss(x0, forward(ids, mask), weighting=dc.loss_weighting,
                             gamma=dc.min_snr_gamma, generator=gen), {}

    def finish(self, step: int, weights: dict[str, Tensor]) -> None:
        """Write the learned row beside the run, tied to its text encoder."""
        c = self.config.invert
        learned.save_token(self.run.dir, c.token, weights["vector"], self.text.identity,
                           init=c.init or MEAN_INIT, steps=str(step), images=c.images)


def captions(texts: list[str], folder: str, token: str) -> list[str]:
    """The folder's captions, each of which must name the token: a caption without it gives
    the row no gradient, and its image would be explained by the other words alone."""
    for text in texts:
        if token not in normalize(text):
            raise ConfigError(f"the caption {text!r} in {folder} does not contain the token "
                              f"{token!r}; write the token where the concept is, e.g. "
                              f"'a {token} circle'")
    return texts


def templates(text: TextConditioner, token: str) -> list[str]:
    """The `TEMPLATES` whose words the text encoder knows, filled with the token."""
    return [t.format(token) for t in TEMPLATES if not text.tokenizer.unknown_words(t.format(token))]


def invert(run_dir: str | Path, config: InvertConfig, *, force: bool = False,
           progress: bool = True) -> Path:
    """Learn `config.invert.token` for the text run `run_dir` from `config.invert.images`;
    returns the token file (RUN/tokens/<slug>.safetensors).

    A token the run has learned already is refused unless `force`, which starts its training
    over (the old file stays until the new one replaces it). An interrupted inversion resumes
    when called again with the same settings; with other ones it is refused (`force` starts
    over)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir} is not a run dir (no config.json); give a text run "
                              "that `inkfuse train` wrote")
    c = config.invert
    # the absolute folder: a rerun from another directory resumes the same inversion
    config = replace(config, invert={"images": str(Path(c.images).resolve())})
    have = learned.learned_token(run_dir, c.token)
    if have is not None and not force:
        raise ConfigError(f"{c.token!r} is learned already for {run_dir} ({have}): use it in "
                          "prompts, or add --force to learn it again")
    if force:
        learned.discard_training(run_dir, c.token)
    check_resumable(learned.work_dir(run_dir, c.token), config)
    loop.run(config, learned.work_dir(run_dir, c.token), InversionKind, progress=progress,
             solo=True)
    return learned.token_file(run_dir, c.token)


def check_resumable(work: Path, config: InvertConfig) -> None:
    """Refuse to resume an interrupted inversion of other settings (images, init): the loop
    would refuse it too, but its fix is a new run dir, where here it is --force."""
    ckpt = checkpoint.find(work)
    if ckpt is None:
        return
    saved = checkpoint.read_json(ckpt / "state.json").get("config", {}).get("invert", {})
    for key, value in config.to_dict()["invert"].items():
        if saved.get(key, value) != value:
            raise ConfigError(f"{work} holds an unfinished inversion with invert.{key} = "
                              f"{saved[key]!r}, not {value!r}; rerun it with those settings to "
                              "resume, or add --force to start over")
