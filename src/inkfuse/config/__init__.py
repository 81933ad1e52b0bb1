"""Recipes: typed, validated configuration for every kind of run (diffusion, VAE, CLIP, text
LM, GAN).

Torch-free, so that a recipe can be read and checked without loading PyTorch:
`python -c "import sys, inkfuse.config; assert 'torch' not in sys.modules"`.
"""

from inkfuse.config.clip import ClipConfig, ClipModelConfig, ClipSettings
from inkfuse.config.core import (
    RECIPES_DIR,
    Recipe,
    apply_overrides,
    bounded,
    build_section,
    choice,
    listed,
    parse_override,
    read_recipe,
    replace,
    resolve_recipe,
)
from inkfuse.config.finetune import FinetuneConfig, FinetuneSettings
from inkfuse.config.gan import GANConfig, GANModelConfig, GANSettings
from inkfuse.config.invert import InvertConfig, InvertSettings
from inkfuse.config.prior import PriorConfig, PriorModelConfig
from inkfuse.config.recipe import KINDS, load_recipe, recipe_kind
from inkfuse.config.sections import (
    Config,
    DataConfig,
    DiffusionConfig,
    ModelConfig,
    SampleConfig,
    TextConfig,
    TrainConfig,
    check_data,
    from_dict,
)
from inkfuse.config.textlm import TextLMConfig, TextLMModelConfig, TextLMSettings
from inkfuse.config.vae import DEFAULT_CHANNEL_MULT, VAEConfig, VAEModelConfig, VAESettings
from inkfuse.errors import ConfigError

__all__ = [
    "DEFAULT_CHANNEL_MULT", "KINDS", "RECIPES_DIR", "ClipConfig", "ClipModelConfig",
    "ClipSettings", "Config", "ConfigError", "DataConfig", "DiffusionConfig", "FinetuneConfig",
    "FinetuneSettings", "GANConfig",
    "GANModelConfig", "GANSettings", "InvertConfig", "InvertSettings", "ModelConfig",
    "PriorConfig", "PriorModelConfig",
    "Recipe", "SampleConfig", "TextConfig", "TextLMConfig", "TextLMModelConfig",
    "TextLMSettings", "TrainConfig", "VAEConfig", "VAEModelConfig",
    "VAESettings", "apply_overrides", "bounded", "build_section", "check_data", "choice",
    "from_dict", "listed", "load_recipe", "parse_override", "read_recipe", "recipe_kind",
    "replace", "resolve_recipe",
]
