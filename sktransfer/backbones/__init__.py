"""Finding and running pretrained networks, one module per family.

Torch is imported only by the family modules, when a backbone is loaded.
"""

from sktransfer.backbones._contract import Backbone, BackboneSpec, Trainable
from sktransfer.backbones._registry import (
    get_backbone_spec,
    list_backbones,
    register_backbone,
)

__all__ = ["Backbone", "BackboneSpec", "Trainable", "get_backbone_spec", "list_backbones",
           "register_backbone"]
