"""prunekit: prune neural networks, above all LLMs, and measure honestly what the zeros buy.

The names below are the public API; the subpackages follow the data flow: ``oneshot`` (calibrate and
prune), ``quant`` (weight quantization), ``train`` (pruning while training), ``store`` (what a run writes),
``run`` (sparse execution), ``measure`` (quality and speed).
"""

from .data import CalibConfig
from .errors import PrunekitError
from .oneshot.config import PruneConfig
from .oneshot.pruner import PruneResult, prune
from .pipeline import EvalRequest, prune_run
from .quant.config import QuantConfig
from .run.semi_structured import to_semi_structured
from .run.sparse_linear import SparseLinear
from .run.swap import sparsify
from .selection import is_valid_nm
from .store.export import export_folder, load_exported
from .train import masks
from .train.finetune import finetune
from .train.gradual import GradualPruner
from .train.lottery import lottery

__all__ = [
    "CalibConfig", "EvalRequest", "GradualPruner", "PruneConfig", "PruneResult", "PrunekitError", "QuantConfig",
    "SparseLinear", "export_folder", "finetune", "is_valid_nm", "load_exported", "lottery", "masks", "prune",
    "prune_run", "sparsify", "to_semi_structured"]
__version__ = "0.1.0"
