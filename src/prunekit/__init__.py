"""prunekit: prune neural networks, above all LLMs, and measure honestly what the zeros buy."""

from . import masks
from .config import CalibConfig, PruneConfig
from .errors import PrunekitError
from .pruner import PruneResult, prune
from .selection import is_valid_nm

__all__ = [
    "masks","CalibConfig", "PruneConfig", "PruneResult", "PrunekitError", "is_valid_nm", "prune"]
__version__ = "0.1.0"
