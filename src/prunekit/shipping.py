"""``prunekit check`` as a library call: ``check_run`` scores a model (perplexity, the task sets, the probes) and,
against a baseline scored on the same items (the dense model, or a previous check's ``check.json``), decides per
category whether it regresses beyond the budget; it writes the report card and returns the exit code a CI gate
reads (``REGRESSED`` when any category fails)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from .errors import PrunekitError
from .fsutil import claim_output, regular_file
from .measure.check import Limits, absolute, fit_context, gate, measure, plot_card, probe_items, report_markdown
from .measure.config import BUDGETS
from .models import load_model
from .pipeline import model_path, model_record
from .recovery import resolve_teacher
from .settings import DTYPES
from .store.manifest import build_manifest, write_json

log = logging.getLogger(__name__)

REGRESSED = 3  # exit code: a category regressed beyond its budget (2 is bad input, as for every command)
RESULT_FILE, BASELINE_FILE, CARD_FILE, FIGURE_FILE = "check.json", "baseline.json", "check.md", "check.png"


def read_check(path: str | Path, budget: str) -> dict:
    """A previous check's results (``check.json``, or the folder holding it), made with the same budget."""
    path = Path(path)
    file = regular_file(path / RESULT_FILE if path.is_dir() else path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        result = data["result"]
        if not (isinstance(result["perplexity"]["window_loss"], list) and isinstance(result["tasks"]["tasks"], dict)
                and isinstance(result["probes"], dict)):
            raise TypeError("not the results of a check")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PrunekitError(f"{file} holds no check results to pair with ({e})") from e
    if data.get("budget") != budget or data.get("plan") != json.loads(json.dumps(dataclasses.asdict(BUDGETS[budget]))):
        raise PrunekitError(f"{file} was checked with another budget than this {budget!r} one: its items differ")
    return result


def check_run(model: str, out: str | Path, baseline: str | None = None, budget: str = "quick",
              limits: Limits | None = None, *, dtype: str = "float32", device: str = "cpu", overwrite: bool = False,
              command: list[str] | None = None) -> tuple[dict, int]:
    """Check ``model`` and write the report card to the folder ``out``; returns (summary, exit code). ``baseline``:
    a model (scored here with the same budget) or a previous ``check.json``; by default the model a pruned folder
    came from where its manifest records the embedded default; none: absolute scores, nothing judged."""
    if budget not in BUDGETS:
        raise PrunekitError(f"--budget is one of {', '.join(BUDGETS)}, not {budget!r}")
    limits = limits or Limits()
    seqlens = {"the evaluation seqlen": BUDGETS[budget].ppl_seqlen}
    with claim_output(out, overwrite) as claim:
        path = model_path(model, seqlens)
        if baseline is None and model != "default":
            try:
                baseline = resolve_teacher(None, path, "")
            except PrunekitError:
                log.warning("no baseline: %s records no embedded default model; scores are absolute", model)
        earlier = baseline and (baseline.endswith(".json") or (Path(baseline) / RESULT_FILE).is_file())
        reference = read_check(baseline, budget) if earlier else None
        base_path = model_path(baseline, seqlens) if baseline and reference is None else None
        net, tok, path = load_model(path, DTYPES[dtype], device)
        plan = fit_context(BUDGETS[budget], net)
        items = probe_items(plan, tok)  # missing or malformed probe files fail here, before the long work
        result = measure(net, tok, plan, items)
        record = model_record(model, path, dtype, net)
        del net
        if base_path is not None:
            dense, dense_tok, _ = load_model(base_path, DTYPES[dtype], device)
            reference = measure(dense, dense_tok, plan, items)
            del dense
        gated = gate(result, reference, limits) if reference else None
        failed = [c for c, e in (gated or {}).items() if e["fails"]]
        name = Path(model).name if model != "default" else "default (SmolLM2-135M)"
        scores = absolute(result)
        card = report_markdown(name, gated, scores, limits, baseline)
        with claim.write() as tmp:
            write_json(build_manifest(command=command, model=record, budget=budget, plan=dataclasses.asdict(BUDGETS[budget]),
                                      limits=vars(limits),
                                      baseline=baseline, result=result, gate=gated), tmp / RESULT_FILE)
            if base_path is not None:
                write_json(build_manifest(model=baseline, budget=budget, plan=dataclasses.asdict(BUDGETS[budget]),
                                          result=reference), tmp / BASELINE_FILE)
            (tmp / CARD_FILE).write_text(card)
            if gated:
                (tmp / FIGURE_FILE).write_bytes(plot_card(gated))
    summary = {"model": model, "out": str(out), "baseline": baseline, "budget": budget,
               "verdict": "no baseline" if gated is None else ("regressed" if failed else "fit to ship"),
               "failed": failed, "categories": scores}
    return summary, REGRESSED if failed else 0
