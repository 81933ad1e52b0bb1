"""A small class-conditional DCGAN with the tricks that make a GAN train reliably, as one module
so that the one training loop (one optimizer, one loss per step) can train it.

    Generator:     z [B, z_dim] ─ linear ─ [B, 4G, S/4, S/4] ─ CGN, ReLU ─ up ─ [B, 2G, S/2, S/2]
                   ─ CGN, ReLU ─ up ─ [B, G, S, S] ─ CGN, ReLU ─ conv 3x3 ─ tanh ─ image
    Discriminator: image ─ conv 4x4/2 ─ conv 4x4/2 ─ conv 3x3 (LeakyReLU 0.1 after each; DCGAN's
                   strided convs, no pooling) ─ sum over positions: φ [B, 2D]
                   ─ linear(φ) + <embed(y), φ> ─ score [B]

- Spectral norm on every discriminator weight (Miyato et al. 2018, "Spectral Normalization for
  Generative Adversarial Networks", Algorithm 1): each weight divided by its largest singular
  value, estimated by one power iteration per training step, so D is about 1-Lipschitz and
  its gradients neither vanish nor explode, whatever G does.
- Hinge loss (Lim & Ye 2017; Miyato et al. 2018 eq. 16-17): D pushes real scores above +1 and
  fake ones below -1 and ignores what is already beyond; G raises D's score of its samples.
- Class conditioning: the generator's GroupNorms take their gain and bias from a class
  embedding (conditional normalisation, as BigGAN's conditional BatchNorm; GroupNorm, so a
  sample does not depend on the rest of its batch and training and sampling behave alike), and
  the discriminator is a projection discriminator (Miyato & Koyama 2018, eq. 3): the inner
  product of the class embedding with D's features adds "does this look like class y".
  An unconditional GAN is the same network with one class.
- Upsampling is nearest + 3x3 conv (`nn.blocks.NearestUpConv`), which has none of the
  checkerboard artefacts of a plain transposed conv (Odena et al. 2016).

`GAN.forward(real, labels, z)` computes both players' losses of one step of simultaneous
gradient descent, routed so that each network gets the gradient of its own loss only: the
discriminator's term sees `G(z).detach()`, and the generator's term calls the discriminator
with every parameter detached (`frozen=True`) and without advancing the power iteration, so
that it scores with exactly the σ the discriminator's term used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inkfuse.config import GANModelConfig
from inkfuse.nn.blocks import NearestUpConv

LEAK = 0.1  # SNGAN's LeakyReLU slope in the discriminator


# ----------------------------------------------------------------------------- losses


def hinge_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]   (Miyato et al. 2018 eq. 16); scores [B]."""
    return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()


def hinge_g_loss(d_fake: Tensor) -> Tensor:
    """-E[D(G(z))]   (Miyato et al. 2018 eq. 17): the generator raises its samples' scores."""
    return -d_fake.mean()


# ----------------------------------------------------------------------------- spectral norm


class _SpectralNorm:
    """W / σ(W) for a layer's `weight`, σ estimated with the buffers u [out] and v [in·k·k]
    (Miyato et al. 2018, Algorithm 1). In training, each call that is not `frozen` first does
    one power iteration, v ← normalise(Wᵀu), u ← normalise(Wv); σ = uᵀWv with u and v held
    constant, so the gradient flows through W alone. Advancing u and v only in the
    discriminator's own pass makes them move once per step, the same in a resumed run."""

    weight: Tensor
    training: bool
    u: Tensor
    v: Tensor

    def _init_vectors(self) -> None:
        mat = self.weight.detach().flatten(1)  # [out, in·k·k]
        self.register_buffer("u", F.normalize(torch.randn(mat.shape[0]), dim=0))
        self.register_buffer("v", F.normalize(torch.randn(mat.shape[1]), dim=0))

    def normalized(self, frozen: bool) -> Tensor:
        w = self.weight.detach() if frozen else self.weight
        with torch.autocast(w.device.type, enabled=False):  # σ in fp32, even under bf16
            mat = w.float().flatten(1)
            if self.training and not frozen:
                with torch.no_grad():
                    self.v.copy_(F.normalize(mat.T @ self.u, dim=0))
                    self.u.copy_(F.normalize(mat @ self.v, dim=0))
            sigma = self.u @ mat @ self.v
        return w / sigma.to(w.dtype)


class SNConv2d(nn.Conv2d, _SpectralNorm):
    def __init__(self, *args: int, **kwargs: int) -> None:
        super().__init__(*args, **kwargs)
        self._init_vectors()

    def forward(self, x: Tensor, frozen: bool = False) -> Tensor:
        bias = None if self.bias is None else (self.bias.detach() if frozen else self.bias)
        return F.conv2d(x, self.normalized(frozen), bias, self.stride, self.padding)


class SNLinear(nn.Linear, _SpectralNorm):
    def __init__(self, *args: int, **kwargs: bool) -> None:
        super().__init__(*args, **kwargs)
        self._init_vectors()

    def forward(self, x: Tensor, frozen: bool = False) -> Tensor:
        bias = None if self.bias is None else (self.bias.detach() if frozen else self.bias)
        return F.linear(x, self.normalized(frozen), bias)


class SNEmbedding(nn.Embedding, _SpectralNorm):
    """The projection discriminator's class embedding, spectrally normalised as in Miyato &
    Koyama 2018 (their SNEmbedID)."""

    def __init__(self, num: int, dim: int) -> None:
        super().__init__(num, dim)
        self._init_vectors()

    def forward(self, y: Tensor, frozen: bool = False) -> Tensor:
        return F.embedding(y, self.normalized(frozen))


# ----------------------------------------------------------------------------- the networks


def classes(cfg: GANModelConfig) -> int:
    """Rows of the class embeddings: an unconditional GAN is a GAN of one class (label 0)."""
    return max(1, cfg.num_classes)


class ConditionalGroupNorm(nn.Module):
    """GroupNorm whose gain and bias come from the class: (1 + γ_y) · GN(h) + β_y; γ, β start
    at 0, so the layer starts as a plain GroupNorm."""

    def __init__(self, groups: int, channels: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        self.embed = nn.Embedding(num_classes, 2 * channels)
        nn.init.zeros_(self.embed.weight)

    def forward(self, h: Tensor, y: Tensor) -> Tensor:
        gain, bias = self.embed(y)[:, :, None, None].chunk(2, dim=1)  # [B, C, 1, 1] each
        return self.norm(h) * (1 + gain) + bias


class Generator(nn.Module):
    """(z [B, z_dim], class ids [B]) -> images [B, C, S, S] in [-1, 1]."""

    def __init__(self, cfg: GANModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        g, k, self.base = cfg.g_channels, classes(cfg), cfg.image_size // 4
        self.fc = nn.Linear(cfg.z_dim, 4 * g * self.base**2)
        self.norms = nn.ModuleList(ConditionalGroupNorm(cfg.groups, w, k)
                                   for w in (4 * g, 2 * g, g))
        self.ups = nn.ModuleList([NearestUpConv(4 * g, 2 * g), NearestUpConv(2 * g, g)])
        self.out = nn.Conv2d(g, cfg.in_channels, 3, padding=1)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        h = self.fc(z).view(len(z), -1, self.base, self.base)  # [B, 4G, S/4, S/4]
        for i, norm in enumerate(self.norms):
            h = F.relu(norm(h, y))
            if i < len(self.ups):
                h = self.ups[i](h)  # [B, 2G, S/2, S/2], then [B, G, S, S]
        return torch.tanh(self.out(h))

    def sample(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images of classes `y` [B] (zeros for an unconditional GAN) from z ~ N(0, I)."""
        z = torch.randn(len(y), self.cfg.z_dim, generator=generator, device=y.device)
        return self(z, y)


class Discriminator(nn.Module):
    """(images [B, C, S, S], class ids [B]) -> scores [B]; `frozen` scores with every
    parameter detached and the power iteration left as it is (the generator's term)."""

    def __init__(self, cfg: GANModelConfig) -> None:
        super().__init__()
        d = cfg.d_channels
        self.convs = nn.ModuleList([
            SNConv2d(cfg.in_channels, d, 4, stride=2, padding=1),  # [B, D, S/2, S/2]
            SNConv2d(d, 2 * d, 4, stride=2, padding=1),            # [B, 2D, S/4, S/4]
            SNConv2d(2 * d, 2 * d, 3, padding=1),                  # [B, 2D, S/4, S/4]
        ])
        self.linear = SNLinear(2 * d, 1)
        self.embed = SNEmbedding(classes(cfg), 2 * d)

    def forward(self, x: Tensor, y: Tensor, frozen: bool = False) -> Tensor:
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h, frozen), LEAK)
        phi = h.sum(dim=(2, 3))  # [B, 2D]: summed, as SNGAN's ResNet D, not averaged
        # projection (Miyato & Koyama 2018 eq. 3): ψ(φ) + <embed(y), φ>
        return self.linear(phi, frozen).squeeze(1) + (self.embed(y, frozen) * phi).sum(1)


class GAN(nn.Module):
    """Both players; `forward` is one step's losses (module docstring)."""

    def __init__(self, cfg: GANModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator, self.discriminator = Generator(cfg), Discriminator(cfg)

    def forward(self, real: Tensor, y: Tensor, z: Tensor) -> dict[str, Tensor]:
        """real [B, C, S, S] in [-1, 1] with class ids y [B]; z [B, z_dim] for fakes of the
        same classes. Returns the losses and the mean scores of real and fake images."""
        fake = self.generator(z, y)
        # the discriminator's term: one pass over real and fake (one power iteration, one σ),
        # the fakes detached so that the generator gets nothing from it
        scores = self.discriminator(torch.cat([real, fake.detach()]), torch.cat([y, y]))
        d_real, d_fake = scores.chunk(2)
        # the generator's term: the same discriminator, its parameters detached
        g_fake = self.discriminator(fake, y, frozen=True)
        return {"d_loss": hinge_d_loss(d_real, d_fake), "g_loss": hinge_g_loss(g_fake),
                "d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()}


@torch.no_grad()
def generate(generator: Generator, labels: Tensor, seed: int, batch_size: int = 500) -> Tensor:
    """Images [N, C, S, S] in [-1, 1] on the CPU of classes `labels` [N], every z drawn in turn
    from one generator seeded with `seed` on the network's device: same seed, same images."""
    device = next(generator.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    return torch.cat([generator.sample(y.to(device), gen).float().cpu()
                      for y in labels.split(batch_size)])
