"""Full-reference image quality: PSNR and SSIM, for judging reconstructions (the VAE).

Both take images in [0, 1], shaped [C, H, W] or [N, C, H, W], and return one value per image
(a 0-d tensor for a single image, [N] for a batch), computed in float64.

SSIM is that of Wang, Bovik, Sheikh & Simoncelli (2004) with the paper's settings: an 11 x 11
Gaussian window of sigma 1.5 (normalised to sum 1), K1 = 0.01, K2 = 0.03, dynamic range L = 1,
the SSIM map taken over the "valid" window positions only (no padding, as in the authors'
MATLAB `ssim_index`), averaged over positions and then over channels. It equals
`skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=0)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03


def _pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Both as float64 [N, C, H, W]; whether the input was a single image."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim not in (3, 4):
        raise ValueError(f"expected [C, H, W] or [N, C, H, W], got {tuple(a.shape)}")
    single = a.ndim == 3
    a, b = (t.detach().to(torch.float64) for t in (a, b))
    return (a[None], b[None], True) if single else (a, b, False)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """10 log10(1 / MSE) per image, in dB; inf where the images are identical."""
    a, b, single = _pair(a, b)
    mse = (a - b).square().mean(dim=(1, 2, 3))
    out = 10 * torch.log10(1.0 / mse)  # 1 / 0 = inf, so identical images give inf
    return out[0] if single else out


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> Tensor:
    """The normalised 2-D Gaussian window [size, size], float64."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM per image (see the module docstring); 1 where the images are identical."""
    a, b, single = _pair(a, b)
    channels = a.shape[1]
    if min(a.shape[-2:]) < WINDOW:
        raise ValueError(f"SSIM needs images of at least {WINDOW} x {WINDOW}, "
                         f"got {tuple(a.shape[-2:])}")
    window = gaussian_window().to(a.device).expand(channels, 1, WINDOW, WINDOW)

    def blur(x: Tensor) -> Tensor:  # local weighted mean, per channel, valid positions only
        return F.conv2d(x, window, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = K1**2, K2**2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
                / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    out = ssim_map.mean(dim=(1, 2, 3))
    return out[0] if single else out


__all__ = ["gaussian_window", "psnr", "ssim"]
