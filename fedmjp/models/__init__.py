"""Models: timm-registered ViT baselines and MJP ViTs (importing this registers them)."""

from .jigsaw import Block, Jigsaw, block_mask, draw_jigsaw
from .mjp_vit import DALHead, MJPVisionTransformer
from .preprocess import from_model_input, to_model_input
from .registry import REGISTERED

__all__ = [
    "REGISTERED",
    "Block",
    "DALHead",
    "Jigsaw",
    "MJPVisionTransformer",
    "block_mask",
    "draw_jigsaw",
    "from_model_input",
    "to_model_input",
]
