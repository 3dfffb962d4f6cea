"""Shared by the protocol-P sweep scripts (protocol_p.py, quant_quality.py, gptq_lattice.py): the ``prunekit``
command beside this Python, and a results file an interrupted sweep resumes from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

PRUNEKIT = str(Path(sys.executable).with_name("prunekit"))


class Results(dict):
    """``folder``/results.json as a dict (empty when new; the folder is made); ``save`` writes it back."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / "results.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(json.loads(self.path.read_text()) if self.path.exists() else {})

    def save(self) -> None:
        self.path.write_text(json.dumps(self, indent=2))


def drop_weights(folder: Path) -> None:
    """Keep a run folder's masks, grids and manifest, not hundreds of MB of weights."""
    for weights in Path(folder).glob("model*.safetensors"):
        weights.unlink()


def quant_p_perplexities(names) -> dict[str, float]:
    """bench/quant_quality.py's perplexities of the runs ``names`` that its results file holds (deterministic on
    CPU, so a later script quotes them instead of running them again)."""
    path = Path("runs/quant-p/results.json")
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    return {name: earlier[name]["ppl"] for name in names if name in earlier}
