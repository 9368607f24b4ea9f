"""Finding and running pretrained networks, one module per family.

Torch is imported only by the family modules, when a backbone is loaded.
"""

from sktransfer.backbones._registry import (
    BackboneSpec,
    get_backbone_spec,
    list_backbones,
    register_backbone,
)

__all__ = ["BackboneSpec", "get_backbone_spec", "list_backbones", "register_backbone"]
