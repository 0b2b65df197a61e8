"""timm-registered models: CIFAR-scale ViT baselines and the MJP twins of timm ViTs.

After ``import fedmjp.models``, ``timm.create_model("mjp_vit_small_patch16_224", mjp_ratio=0.25)``
works like any timm name. The MJP twins of the 224-px models reuse timm's pretrained
configs, so ``pretrained=True`` loads timm's weights (from the hub, or from a local file via
``pretrained_cfg_overlay=dict(file=PATH)``).
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from .mjp_vit import MJPVisionTransformer

# timm names that get an MJP twin, with the checkpoint filter options timm uses for them.
_TIMM_BASES = {
    "vit_tiny_patch16_224": {},
    "vit_small_patch16_224": {},
    "vit_base_patch16_224": {},
    "deit_small_patch16_224": {"adapt_layer_scale": True},
}

_CIFAR_CFG = {
    "url": "",
    "num_classes": 10,
    "input_size": (3, 32, 32),
    "pool_size": None,
    "crop_pct": 1.0,
    "interpolation": "bicubic",
    "fixed_input_size": True,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "first_conv": "patch_embed.proj",
    "classifier": "head",
}


def _twin_cfgs() -> dict:
    cfgs = {}
    for base in _TIMM_BASES:
        cfg = get_pretrained_cfg(base)  # timm's default tag for the base architecture
        cfgs[f"mjp_{base}.{cfg.tag}"] = cfg
    for name in ("vit_tiny_patch4_32", "vit_small_patch4_32"):
        cfgs[name] = dict(_CIFAR_CFG)
        cfgs[f"mjp_{name}"] = dict(_CIFAR_CFG)
    return cfgs


default_cfgs = generate_default_cfgs(_twin_cfgs())


def _keep_mjp_params(state_dict: dict[str, torch.Tensor], model: VisionTransformer, **filter_kwargs):
    """timm's checkpoint filter, then the MJP-only parameters from the model's own init.

    A timm checkpoint has no unknown embedding or DAL head; adding them here keeps the load
    strict for every parameter the checkpoint does have.
    """
    state_dict = checkpoint_filter_fn(state_dict, model, **filter_kwargs)
    own = model.state_dict()
    for key in own:
        if key.startswith(("unk_pos_embed", "dal_head.")) and key not in state_dict:
            state_dict[key] = own[key]
    return state_dict


def _create(model_cls: type[VisionTransformer], variant: str, pretrained: bool = False, **kwargs):
    base = variant.removeprefix("mjp_")
    filter_kwargs = _TIMM_BASES.get(base, {})
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=partial(_keep_mjp_params, **filter_kwargs),
        feature_cfg=dict(out_indices=kwargs.pop("out_indices", 3), feature_cls="getter"),
        **kwargs,
    )


_create_vit = partial(_create, VisionTransformer)
_create_mjp = partial(_create, MJPVisionTransformer)


@register_model
def vit_tiny_patch4_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Tiny with 4-px patches at 32 px (CIFAR scale: 8x8 grid, n=64 <= d=192)."""
    model_args = dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, num_classes=10)
    return _create_vit("vit_tiny_patch4_32", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def vit_small_patch4_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Small with 4-px patches at 32 px."""
    model_args = dict(img_size=32, patch_size=4, embed_dim=384, depth=12, num_heads=6, num_classes=10)
    return _create_vit("vit_small_patch4_32", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def mjp_vit_tiny_patch4_32(pretrained: bool = False, **kwargs) -> MJPVisionTransformer:
    """MJP twin of vit_tiny_patch4_32."""
    model_args = dict(img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, num_classes=10)
    return _create_mjp("mjp_vit_tiny_patch4_32", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def mjp_vit_small_patch4_32(pretrained: bool = False, **kwargs) -> MJPVisionTransformer:
    """MJP twin of vit_small_patch4_32."""
    model_args = dict(img_size=32, patch_size=4, embed_dim=384, depth=12, num_heads=6, num_classes=10)
    return _create_mjp("mjp_vit_small_patch4_32", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def mjp_vit_tiny_patch16_224(pretrained: bool = False, **kwargs) -> MJPVisionTransformer:
    """MJP twin of timm's vit_tiny_patch16_224."""
    model_args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return _create_mjp("mjp_vit_tiny_patch16_224", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def mjp_vit_small_patch16_224(pretrained: bool = False, **kwargs) -> MJPVisionTransformer:
    """MJP twin of timm's vit_small_patch16_224."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create_mjp("mjp_vit_small_patch16_224", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def mjp_vit_base_patch16_224(pretrained: bool = False, **kwargs) -> MJPVisionTransformer:
    """MJP twin of timm's vit_base_patch16_224."""
    model_args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return _create_mjp("mjp_vit_base_patch16_224", pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def mjp_deit_small_patch16_224(pretrained: bool = False, **kwargs) -> MJPVisionTransformer:
    """MJP twin of timm's deit_small_patch16_224."""
    model_args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create_mjp("mjp_deit_small_patch16_224", pretrained=pretrained, **dict(model_args, **kwargs))


REGISTERED = (
    "vit_tiny_patch4_32",
    "vit_small_patch4_32",
    "mjp_vit_tiny_patch4_32",
    "mjp_vit_small_patch4_32",
    "mjp_vit_tiny_patch16_224",
    "mjp_vit_small_patch16_224",
    "mjp_vit_base_patch16_224",
    "mjp_deit_small_patch16_224",
)
