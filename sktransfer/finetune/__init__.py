"""Fine-tuning pretrained networks as scikit-learn estimators.

``estimators`` holds the public classes and sets their fitted attributes; ``training`` is one
run of the recipe; ``probe`` the frozen features and the linear probes of epoch 0; ``targets``
one object per kind of target (classes, labels, real values, several tasks). Importing this
package imports torch.
"""

from sktransfer.finetune.estimators import (
    FineTunedImageClassifier,
    FineTunedImageEmbedder,
    FineTunedImageRegressor,
    FineTunedTextClassifier,
    FineTunedTextEmbedder,
    FineTunedTextRegressor,
)

__all__ = ["FineTunedImageClassifier", "FineTunedImageEmbedder", "FineTunedImageRegressor",
           "FineTunedTextClassifier", "FineTunedTextEmbedder", "FineTunedTextRegressor"]
