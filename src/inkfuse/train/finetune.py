"""DreamBooth (Ruiz et al. 2023) as a training kind: a trained text run's U-Net fine-tuned on a
few images of a subject, with LoRA (Hu et al. 2021) as the option of training low-rank adapters
alone.

    config = finetune_recipe("runs/text", "runs/text-ft", "photos/", "a red circle",
                             class_prompt="a circle", lora=4)
    train(config, "runs/text-ft")    # then: inkfuse sample runs/text-ft --prompt "a red circle"

It is the diffusion kind on other data: the subject's images with their captions, and the
run's own loss (`Denoiser.loss`: its schedule, target, weighting, and CFG dropout at its
`diffusion.cond_drop_prob`). Prior preservation (Ruiz et al. eq. 2) adds the same loss on
images of the subject's class, drawn once by the *original* model from `class_prompt` with its
recipe's sampler and guidance, weighted by `prior_weight`: a step sees as many class images as
subject images, so the model keeps drawing the class while it learns the subject, rather than
drifting until every "circle" is the subject (language drift).

The text encoder is the base run's, loaded as the sampler loads it (`load_run`), so tokens
learned for the base (textual inversion) read the same in the prompts here. A full fine-tune
starts from the base's EMA weights and is a whole run dir (the base's CLIP and VAE copied in);
a LoRA run trains only the adapters (`nn.lora`), B = 0 so that step 0 is the base exactly, and
keeps the adapters and a reference to the base (`artifacts.finetune`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from inkfuse import pipelines
from inkfuse.artifacts import checkpoint
from inkfuse.artifacts.finetune import (
    base_dir,
    base_reference,
    check_out,
    copy_parts,
    load_class_images,
    save_class_images,
    weights_digest,
)
from inkfuse.artifacts.run import Run, load_run, read_config
from inkfuse.config import FinetuneConfig, replace
from inkfuse.data import ImageDataset
from inkfuse.data.subject import subject_images
from inkfuse.diffusion import Condition
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.nn.lora import Adapted, narrowest
from inkfuse.train.diffusion import DiffusionKind
from inkfuse.train.loop import check_same_model, seed_for

# Adapters learn from zero at a rate about ten times a full fine-tune's (as LoRA fine-tunes of
# Stable Diffusion do: 1e-4 against DreamBooth's 5e-6); measured in benchmarks/finetune.py.
LORA_LR = 1e-3
CLASS_SEED = 2_000_003  # the class images draw from seed_for(train.seed, this)


def finetune_recipe(base: str | Path, out: str | Path, images: str | Path, prompt: str, *,
                    class_prompt: str = "", prior_weight: float = 1.0, class_images: int = 100,
                    lora: int = 0, lora_alpha: float = 0.0, **train: object) -> FinetuneConfig:
    """The recipe that fine-tunes run `base` into `out`: the base's own recipe, a [finetune]
    table of these settings, and a [train] table of the fine-tune defaults with the base's
    precision and device and the `train` keys given (steps, lr, seed, batch_size, ...; lr
    defaults to LORA_LR with adapters). Validated like every recipe."""
    base, out = Path(base), Path(out)
    if not base.is_dir():
        raise CheckpointError(f"run dir {base} does not exist: give the text run to fine-tune")
    config, _ = read_config(base)
    defaults = dataclasses.asdict(FinetuneConfig().train) | {
        "precision": config.train.precision, "device": config.train.device,
        "lr": LORA_LR if lora else FinetuneConfig().train.lr}
    raw = config.to_dict() | {
        "train": defaults | {k: v for k, v in train.items() if v is not None},
        "finetune": {"base": base_reference(base, out), "base_weights": weights_digest(base),
                     "images": str(Path(images).resolve()), "prompt": prompt.strip(),
                     "class_prompt": class_prompt.strip(), "prior_weight": prior_weight,
                     "class_images": class_images, "lora": lora, "lora_alpha": lora_alpha}}
    return FinetuneConfig.from_dict(raw, source=f"the fine-tune of {base}")


class FinetuneKind(DiffusionKind):
    label = "fine-tuning"
    sections = (*DiffusionKind.sections, "finetune")

    def setup(self) -> None:
        config: FinetuneConfig = self.config
        f, run_dir = config.finetune, self.run_dir
        base_path = base_dir(run_dir, f.base)
        check_out(run_dir, base_path)
        base = load_run(base_path, device=self.device)  # as the sampler loads it: its tokens too
        subject = subject_images(f.images, config.data.size, base.image_shape[0], f.prompt)
        prompts = list(dict.fromkeys([*subject.captions, *filter(None, [f.class_prompt])]))
        for prompt in prompts:  # words the CLIP never read: one line, before any work
            base.text.check(prompt)
        config = replace(config, train={"batch_size": min(config.train.batch_size, len(subject))},
                         sample={"prompts": prompts[:8]})
        if checkpoint.find(run_dir) is not None:  # refused before anything is written
            check_same_model(config.to_dict(), self.saved_config(None), self.sections, run_dir)
        elif self.dist.main:  # at once: a killed start is known as this fine-tune's on rerun
            checkpoint.write_json(run_dir / "config.json", config.to_dict())
        if self.dist.main and not f.lora:
            copy_parts(base_path, run_dir, config)
        drawn = self.class_images(base, config)
        captions = [*subject.captions, *[f.class_prompt] * len(drawn)]
        data = ImageDataset(torch.cat([subject.images, drawn]), captions=captions,
                            name=subject.name)
        self.base_weights = {k: v.detach().clone() for k, v in base.net.state_dict().items()}
        self.use(config, data, base.text, base.latent)
        self.size = len(subject)  # the loop draws subject images; `batch` adds class images
        self.class_count = len(drawn)

    def class_images(self, base: Run, config: FinetuneConfig) -> Tensor:
        """uint8 [N, C, H, W]: the base model's drawings of the class prompt (N = 0 without
        one), drawn once with its recipe's sampler, steps and guidance and kept in the run dir,
        so that a resumed run trains on the same ones."""
        f, s = config.finetune, base.config.sample
        shape = (0, *base.image_shape)
        if not f.class_prompt:
            return torch.zeros(shape, dtype=torch.uint8)
        seed = seed_for(config.train.seed, CLASS_SEED)
        key = (f.class_prompt, f.class_images, seed, f.base_weights)
        if self.dist.main and load_class_images(self.run_dir, *key) is None:
            images = pipelines.sample(
                base, f.class_images, prompts=[key[0]], sampler=s.sampler, steps=s.steps,
                guidance=s.guidance, rescale=s.guidance_rescale, seed=seed,
                progress=self.progress, **pipelines.recipe_options(base, s.sampler))
            uint8 = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
            save_class_images(self.run_dir, uint8, key[0], seed, f.base_weights)
        if self.dist.world > 1:
            dist.barrier()
        return load_class_images(self.run_dir, *key)

    def make_model(self) -> nn.Module:
        """The base's weights, all trained; or frozen, with rank-`lora` adapters trained."""
        net = super().make_model()  # the U-Net, and the copy the progress grids sample from
        net.load_state_dict(self.base_weights)
        f = self.config.finetune
        if not f.lora:
            return net
        if f.lora > narrowest(net):
            raise ConfigError(f"--lora {f.lora} is no low rank: the narrowest adapted layer of "
                              f"this U-Net is {narrowest(net)} wide; give a rank below it "
                              "(4 to 16 are usual)")
        return Adapted(net, f.lora, f.lora_alpha)

    def load_sampler(self, weights: dict[str, Tensor]) -> None:
        """A LoRA run's `weights` are adapters: merged into the base weights, as on load."""
        f = self.config.finetune
        if not f.lora:
            return super().load_sampler(weights)
        self.run.net.load_state_dict(self.base_weights)
        adapted = Adapted(self.run.net, f.lora, f.lora_alpha)
        adapted.load_state_dict(weights)
        adapted.merge()

    def batch(self, idx: Tensor, gen: torch.Generator) -> tuple[Tensor, Condition | None]:
        """The subject images `idx`, then as many class images drawn at random."""
        idx = idx.to(self.device)
        if self.class_count:
            drawn = torch.randint(self.class_count, idx.shape, generator=gen, device=self.device)
            idx = torch.cat([idx, self.size + drawn])
        return super().batch(idx, gen)

    def loss(self, forward: nn.Module, batch: tuple[Tensor, Condition | None],
             gen: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        """The run's loss on the subject rows, plus prior_weight times it on the class rows
        (Ruiz et al. eq. 2)."""
        x0, cond = batch
        n = len(x0) // 2 if self.class_count else len(x0)
        subject, _ = super().loss(forward, (x0[:n], cond[:n]), gen)
        if not self.class_count:
            return subject, {}
        prior, _ = super().loss(forward, (x0[n:], cond[n:]), gen)
        return (subject + self.config.finetune.prior_weight * prior,
                {"subject": subject.item(), "prior": prior.item()})
