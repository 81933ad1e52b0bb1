"""Text-image contrastive models (CLIP): the BPE tokenizer, training, evaluation, loading."""

from inkfuse.clip.tokenizer import BPETokenizer
from inkfuse.clip.train import ClipConfig, load_clip, train_clip
from inkfuse.nn.clip import CLIP, ClipModelConfig, clip_loss

__all__ = ["CLIP", "BPETokenizer", "ClipConfig", "ClipModelConfig", "clip_loss", "load_clip",
           "train_clip"]
