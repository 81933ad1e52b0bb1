"""Pretrained OpenAI / OpenCLIP models behind inkfuse's CLIP interface, through `open_clip`.

    model, tokenizer, meta = load_clip("open_clip:ViT-B-32:openai")          # from the cache
    model, tokenizer, meta = load_clip("open_clip:ViT-L-14:/models/vit-l.safetensors")

The model and tokenizer duck-type `inkfuse.nn.clip.CLIP` and `BPETokenizer`, so CLIP scoring,
similarity heat-maps and the text-conditioned U-Net take them unchanged: images arrive in
[-1, 1] at any size and are resized to the model's input size and normalised with the mean and
std it was trained with; `encode_text_tokens` gives the final-layernormed per-token features that
Stable Diffusion cross-attends to; `encode_text` the pooled, projected, unit-length embedding
that open_clip's own `encode_text` gives. Prompts longer than the context are refused (open_clip
would silently cut them).

Nothing is downloaded: a pretrained tag is looked up in open_clip's caches (Hugging Face's, or
~/.cache/clip), and a missing file is an error that says how to fetch it. A weights file is a
state dict (.pt, .bin, .safetensors) or a TorchScript archive as OpenAI released them. A tag
trained with QuickGELU (OpenAI's, LAION-400M's) builds the model with QuickGELU, which open_clip
would only warn about; a weights *file* is read as the architecture named, so pass e.g.
`ViT-B-32-quickgelu` for OpenAI's. Only models with CLIP's own causal text transformer and BPE
tokenizer are supported (not SigLIP, CoCa or Hugging Face text towers). Needs the `openclip`
extra: pip install 'inkfuse[openclip]'.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import pickle
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inkfuse.artifacts.checkpoint import check_weights
from inkfuse.errors import CheckpointError, ConfigError
from inkfuse.text.tokenizer import pack

PREFIX = "open_clip:"
INSTALL = "pip install 'inkfuse[openclip]'"
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
# in TorchScript archives but no weights: OpenAI's sizes, a scripted open_clip's causal mask
_TORCHSCRIPT_EXTRAS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


@dataclass
class OpenClipConfig:
    """What callers of inkfuse's CLIP read from `model.cfg`."""

    image_size: int
    in_channels: int
    vocab_size: int
    context_length: int
    width: int  # per-token feature width (the text transformer's)
    embed_dim: int


# ----------------------------------------------------------------------------- import


def _torchvision_ops_path() -> str | None:
    """Path of torchvision's compiled ops, found without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(spec.submodule_search_locations[0])
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if (folder / f"_C{suffix}").is_file():
            return str(folder / f"_C{suffix}")
    return None


@functools.cache
def _declare_torchvision_nms() -> torch.library.Library:
    """The schemas of the two ops that torchvision's import registers fakes for without checking
    that its compiled ops loaded. Cached: the schemas live as long as the returned library."""
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return lib


def _tolerate_cuda_torchvision() -> None:
    """Let a CPU-only torch import PyPI's torchvision, whose compiled ops are built against
    CUDA torch and cannot load beside it.

    torchvision then dies on import (`operator torchvision::nms does not exist`), though
    open_clip uses only its pure-Python parts (transforms, FrozenBatchNorm2d). Declaring the two
    missing schemas lets the import finish; torchvision's compiled ops still raise torchvision's
    own error if anything calls them. Nothing happens when the ops load or torchvision is in.
    """
    if "torchvision" in sys.modules or (path := _torchvision_ops_path()) is None:
        return
    try:
        torch.ops.load_library(path)
    except OSError:
        _declare_torchvision_nms()


def import_open_clip() -> ModuleType:
    """The `open_clip` module, or a ConfigError that says how to install it."""
    _tolerate_cuda_torchvision()
    try:
        import open_clip
    except ImportError as e:
        raise ConfigError(f"pretrained CLIP models need the open_clip package ({e}): "
                          f"{INSTALL}") from None
    except RuntimeError as e:  # a torchvision built for another torch than this one
        first = str(e).splitlines()[0]
        raise ConfigError(f"open_clip fails to import ({first}): install the torchvision "
                          "built for this torch (the CPU build for a CPU-only torch)") from None
    return open_clip


# ----------------------------------------------------------------------------- adapters


class OpenClipModel(nn.Module):
    """An open_clip `CLIP` with the methods and `cfg` of inkfuse's CLIP."""

    def __init__(self, clip: nn.Module, embed_dim: int, mean: tuple[float, ...],
                 std: tuple[float, ...]):
        super().__init__()
        self.clip = clip
        size = clip.visual.image_size
        self.input_size = (size, size) if isinstance(size, int) else tuple(size)
        self.cfg = OpenClipConfig(
            image_size=self.input_size[0], in_channels=3, vocab_size=clip.vocab_size,
            context_length=clip.context_length, width=clip.transformer.width,
            embed_dim=embed_dim)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def encode_image(self, images: Tensor) -> Tensor:
        """images [B, C, H, W] in [-1, 1], any size; C = 1 (greyscale) is read as grey RGB.
        -> unit vectors [B, embed_dim]."""
        x = images.float().add(1).div(2)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != self.input_size:
            # clamped as PIL clips the overshoot of bicubic when open_clip resizes
            x = F.interpolate(x, size=self.input_size, mode="bicubic", antialias=True,
                              align_corners=False).clamp(0, 1)
        return F.normalize(self.clip.encode_image((x - self.mean) / self.std).float(), dim=-1)

    def encode_text_tokens(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-token features [B, L, width] after the final LayerNorm, and the mask [B, L].

        As open_clip's `encode_text` up to its pooling, for any L up to the context: the causal
        mask keeps padding out of every real token's features."""
        m, L = self.clip, ids.shape[1]
        if self.cfg.context_length < L:
            raise ValueError(f"{L} tokens, but the text encoder reads at most "
                             f"{self.cfg.context_length}")
        dtype = m.transformer.get_cast_dtype()
        x = m.token_embedding(ids).to(dtype) + m.positional_embedding[:L].to(dtype)
        attn_mask = None if m.attn_mask is None else m.attn_mask[:L, :L]
        return m.ln_final(m.transformer(x, attn_mask=attn_mask)), mask

    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids, mask from the tokenizer -> unit vectors [B, embed_dim]: pooled (at `<eot>` for
        CLIP's argmax pooling) and projected exactly as open_clip's `encode_text`."""
        from open_clip.transformer import text_global_pool

        m = self.clip
        tokens, _ = self.encode_text_tokens(ids, mask)
        x = text_global_pool(tokens, ids, m.text_pool_type, eos_token_id=m.text_eos_id)
        x = m.text_projection(x) if isinstance(m.text_projection, nn.Linear) else (
            x @ m.text_projection)
        return F.normalize(x.float(), dim=-1)


class OpenClipTokenizer:
    """open_clip's BPE tokenizer with `BPETokenizer.batch`'s contract: an error, not a silent
    cut, for a prompt longer than the context. Its vocabulary is the whole of English (and
    more), so it has no word list and no unknown words."""

    words: frozenset[str] = frozenset()

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.sot, self.eot = tokenizer.sot_token_id, tokenizer.eot_token_id
        self.pad = 0  # as open_clip pads

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def unknown_words(self, text: str) -> list[str]:
        return []

    def batch(self, texts: list[str], context_length: int, *, allow_empty: bool = False
              ) -> tuple[Tensor, Tensor]:
        """As `BPETokenizer.batch`: (ids int64 [B, L], mask bool [B, L])."""
        return pack(texts, context_length, self.tokenizer.encode, self.tokenizer.clean_fn,
                    sot=self.sot, eot=self.eot, pad=self.pad, allow_empty=allow_empty)


# ----------------------------------------------------------------------------- loading


def is_open_clip_spec(spec: str | Path) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def parse_spec(spec: str) -> tuple[str, str]:
    """"open_clip:MODEL:WEIGHTS" -> (MODEL, WEIGHTS); WEIGHTS may hold colons (C:\\...)."""
    parts = spec[len(PREFIX):].split(":", 1)
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"{spec!r} is not open_clip:MODEL:WEIGHTS; write e.g. "
                          "open_clip:ViT-B-32:openai or open_clip:ViT-B-32:/path/weights.pt")
    return parts[0], parts[1]


def _model_config(open_clip: ModuleType, name: str) -> dict[str, Any]:
    """open_clip's config of `name` (less `custom_text`, which CLIP's constructor does not
    take), refused unless its text side is CLIP's own."""
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"open_clip has no model {name!r}{hint}; its names are in "
                          "open_clip.list_models(), e.g. ViT-B-32, ViT-L-14, ViT-H-14")
    text = cfg["text_cfg"]
    if (cfg.pop("custom_text", False) or "multimodal_cfg" in cfg or text.get("hf_model_name")
            or text.get("hf_tokenizer_name")):
        raise ConfigError(f"open_clip {name} has a text tower or tokenizer other than CLIP's "
                          "own, which inkfuse cannot read per-token features from; use a CLIP "
                          "model such as ViT-B-32, ViT-L-14 or ViT-H-14")
    return cfg


def _cached_tag(name: str, tag: str, pcfg: dict[str, Any]) -> Path:
    """The weights of a pretrained tag from open_clip's caches, without the network: the
    Hugging Face cache (a .safetensors twin first, as open_clip prefers), then ~/.cache/clip."""
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    looked: list[str] = []
    if pcfg.get("file"):
        looked.append(pcfg["file"])
        if Path(pcfg["file"]).is_file():
            return Path(pcfg["file"])
    if pcfg.get("hf_hub"):
        repo, filename = os.path.split(pcfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        safe = (HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME
                else str(Path(filename).with_suffix(".safetensors")))
        for file in (safe, filename):
            found = try_to_load_from_cache(repo, file)
            if isinstance(found, str):
                return Path(found)
        looked.append(f"{repo}/{filename} in the Hugging Face cache")
    if pcfg.get("url"):
        path = Path("~/.cache/clip").expanduser() / os.path.basename(pcfg["url"])
        looked.append(str(path))
        if path.is_file():
            return path
    raise CheckpointError(
        f"the weights of open_clip {name}:{tag} are not on this machine (looked for "
        f"{' and '.join(looked)}) and inkfuse never downloads; fetch them once with python -c "
        f"\"import open_clip; open_clip.create_model('{name}', pretrained='{tag}')\", or pass "
        f"a file: open_clip:{name}:/path/to/weights")


def _weights_path(open_clip: ModuleType, name: str, pretrained: str
                  ) -> tuple[Path, dict[str, Any]]:
    """(the weights file, the tag's config or {}) for a file path or a pretrained tag."""
    pcfg = open_clip.get_pretrained_cfg(name, pretrained)
    if pcfg:
        return _cached_tag(name, pretrained, pcfg), pcfg
    path = Path(pretrained).expanduser()
    if path.is_file():
        return path, {}
    if os.sep in pretrained or "/" in pretrained or path.suffix in _WEIGHT_SUFFIXES:
        raise CheckpointError(f"{path} is missing: pass an existing weights file, or a "
                              f"pretrained tag of {name}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    known = f"one of {', '.join(tags)}" if tags else "none"
    raise ConfigError(f"open_clip {name} has no pretrained tag {pretrained!r} (it has "
                      f"{known}); or pass a weights file path")


def _is_torchscript(path: Path) -> bool:
    """OpenAI's own releases (as its `clip` package caches them) are TorchScript archives,
    which torch.load refuses to read as plain weights."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(Path(n).name == "constants.pkl" for n in archive.namelist())


TRUST_FLAG = "--trust-weights"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _known_sha256(pcfg: dict[str, Any]) -> str | None:
    """The sha256 of a pretrained tag's file where its release names one: OpenAI's download
    URLs carry it as the folder (…/clip/models/<sha256>/ViT-B-32.pt, checked by OpenAI's own
    loader too)."""
    parts = str(pcfg.get("url", "")).rstrip("/").split("/")
    digest = parts[-2] if len(parts) >= 2 else ""
    return digest if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest) else None


def _check_torchscript(path: Path, pcfg: dict[str, Any], trust: bool) -> None:
    """A TorchScript archive is pickle inside: loading one can run its author's code. Load it
    only if it is the file its pretrained tag names by sha256, or the user trusts it."""
    if trust:
        return
    sha = _sha256(path)
    if sha != _known_sha256(pcfg):
        raise CheckpointError(f"{path} is not a known network (sha256 {sha[:16]}…): it is "
                              "TorchScript, and loading it could run code in it; pass "
                              f"{TRUST_FLAG} if you trust this file")


def _plain_state_dict(path: Path, trust: bool) -> dict[str, Tensor]:
    """A state dict from .safetensors, or from a torch.save file read with weights_only=True
    (tensors and plain containers only, no code); a file that needs full unpickling is read
    only with `trust`. Unwraps {"state_dict": ...} and DDP's "module." as open_clip does."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e):  # not a refused class or function: a damaged file
            raise
        if not trust:
            raise CheckpointError(f"{path} holds pickled objects besides tensors, and loading "
                                  f"it could run code in it; pass {TRUST_FLAG} if you trust "
                                  "this file") from None
        state = torch.load(str(path), map_location="cpu", weights_only=False)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of "
                              "weights; pass a .pt, .bin or .safetensors state dict")
    if state and all(str(k).startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _read_weights(path: Path, name: str, model: nn.Module, pcfg: dict[str, Any] | None = None,
                  trust: bool = False) -> dict[str, Tensor]:
    """The state dict in `path`, checked tensor by tensor against `model`, so weights of
    another architecture give one line naming the first mismatch, not torch's list of all."""
    torchscript = _is_torchscript(path)
    if torchscript:
        _check_torchscript(path, pcfg or {}, trust)
    try:
        if torchscript:
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
            weights = {k: v for k, v in state.items() if k not in _TORCHSCRIPT_EXTRAS}
        else:
            weights = _plain_state_dict(path, trust)
    except CheckpointError:
        raise
    except Exception as e:  # torch.load and safetensors raise many types on a bad file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} cannot be read as weights ({first}); is it a complete "
                              ".pt, .bin or .safetensors state dict?") from None
    check_weights(weights, model.state_dict(), path, f"open_clip {name}",
                  fix="pass the model name the weights were trained as", cast_floats=True)
    return weights


def load_open_clip(model_name: str, pretrained: str, device: str | torch.device = "cpu",
                   *, trust: bool = False
                   ) -> tuple[OpenClipModel, OpenClipTokenizer, dict[str, Any]]:
    """(model in eval mode, tokenizer, a description) of an open_clip architecture with the
    weights of a file or a cached pretrained tag; offline, fp32. Weights that could run code
    when loaded (TorchScript not matching its tag's sha256, pickles beyond tensors) need
    `trust` (the CLI's --trust-weights)."""
    open_clip = import_open_clip()
    cfg = _model_config(open_clip, model_name)
    path, pcfg = _weights_path(open_clip, model_name, pretrained)
    if pcfg.get("quick_gelu"):
        cfg["quick_gelu"] = True
    # built directly: create_model would log that the model is random before our weights load
    clip = open_clip.CLIP(**cfg)
    clip.load_state_dict(_read_weights(path, model_name, clip, pcfg, trust))
    mean = tuple(pcfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(pcfg.get("std", open_clip.OPENAI_DATASET_STD))
    model = OpenClipModel(clip, cfg["embed_dim"], mean, std).to(device).eval()
    tok = OpenClipTokenizer(open_clip.SimpleTokenizer(context_length=clip.context_length))
    meta = {"format": "open_clip", "model_name": model_name, "pretrained": pretrained,
            "weights": str(path), "quick_gelu": bool(cfg.get("quick_gelu")),
            "mean": list(mean), "std": list(std), "model": asdict(model.cfg)}
    return model, tok, meta


def load_open_clip_spec(spec: str, device: str | torch.device = "cpu", *, trust: bool = False
                        ) -> tuple[OpenClipModel, OpenClipTokenizer, dict[str, Any]]:
    """`load_open_clip` of "open_clip:MODEL:WEIGHTS"."""
    return load_open_clip(*parse_spec(spec), device=device, trust=trust)
