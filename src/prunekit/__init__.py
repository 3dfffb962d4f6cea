"""prunekit: prune neural networks, above all LLMs, and measure honestly what the zeros buy."""

from .config import CalibConfig, PruneConfig
from .errors import PrunekitError
from .oneshot.pruner import PruneResult, prune
from .selection import is_valid_nm
from .train import masks

__all__ = [
    "masks","CalibConfig", "PruneConfig", "PruneResult", "PrunekitError", "is_valid_nm", "prune"]
__version__ = "0.1.0"
