"""Fine-tuning pretrained networks as scikit-learn estimators.

``estimators`` holds the public classes and sets their fitted attributes; ``training`` is one
run of the recipe; ``probe`` the frozen features and the linear probe of epoch 0; ``targets``
what is learned (class labels, checked row by row). Importing this package imports torch.
"""

from sktransfer.finetune.estimators import (
    FineTunedImageClassifier,
    FineTunedImageEmbedder,
    FineTunedTextClassifier,
    FineTunedTextEmbedder,
)

__all__ = ["FineTunedImageClassifier", "FineTunedImageEmbedder", "FineTunedTextClassifier",
           "FineTunedTextEmbedder"]
