"""Command line: ``prunekit prune | quantize | eval | recover | finetune | check | lottery | export | info | hardware |
bench | compare``.
Calls only the public API."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import typing
from collections import Counter
from enum import StrEnum
from pathlib import Path

from .data import CalibConfig
from .devices import parse_device
from .errors import PrunekitError, choice
from .fsutil import check_output_file, claim_output
from .measure.check import Limits
from .measure.config import BUDGETS, EvalConfig, TaskConfig
from .models import load_model
from .oneshot.config import PruneConfig, RecoverConfig
from .pipeline import OFFLOADS, EvalRequest, model_path, model_record, prune_run
from .quant.config import QuantConfig
from .recovery import finetune_run, model_grids, recover_run
from .run.layouts import LAYOUTS
from .settings import DTYPES
from .shipping import check_run
from .store.info import format_table, layer_table
from .store.manifest import build_manifest, write_json
from .train.config import FinetuneConfig

log = logging.getLogger("prunekit")


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors become PrunekitErrors: one line on stderr and exit code 2, like every other."""

    def error(self, message: str) -> typing.NoReturn:
        raise PrunekitError(message)


def _choice_type(kind: type[StrEnum], what: str):
    """argparse ``type`` for an enum: its member, or our one-line message (argparse shows the text of an
    ArgumentTypeError, but only a generic line for other errors)."""
    def convert(value: str) -> StrEnum:
        try:
            return choice(kind, value, what)
        except PrunekitError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


def _add_config_flags(p: argparse.ArgumentParser, cls: type, only: tuple[str, ...] | None = None,
                      aliases: dict[str, str] | None = None) -> None:
    """One flag per field of the config dataclass ``cls`` (or of the fields ``only``): type, default, choices and
    help from the field; ``aliases``: another flag name for a field."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("nested") or (only is not None and f.name not in only):
            continue
        kind = hints[f.name]
        if typing.get_origin(kind) in (typing.Union, type(int | None)):  # X | None
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        kw: dict = {"dest": f.name, "default": f.default, "help": f.metadata["help"]}
        if f.default is dataclasses.MISSING:
            kw |= {"required": True, "default": None}
        if kind is bool:  # a default of None (resolved by the config) also takes --no-FLAG
            kw["action"] = argparse.BooleanOptionalAction if f.default is None else "store_true"
        elif typing.get_origin(kind) is tuple:
            kw |= {"action": "append", "default": [], "type": typing.get_args(kind)[0]}
        elif isinstance(kind, type) and issubclass(kind, StrEnum):
            kw |= {"type": _choice_type(kind, f.name.replace("_", " ")), "choices": list(kind)}
        else:
            kw["type"] = kind
        flags = ["--" + (f.metadata["flag"] or f.name.replace("_", "-"))]
        if aliases and f.name in aliases:
            flags.append("--" + aliases[f.name])
        p.add_argument(*flags, **kw)


def _config(cls: type, args: argparse.Namespace, **nested):
    """``cls`` built from the flags ``_add_config_flags`` made for it (validated by ``cls`` itself), and ``nested``;
    fields without a flag keep their defaults."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                  if f.init and f.name not in nested and hasattr(args, f.name)}, **nested)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="HF name or folder, a .gguf file, or 'default' (SmolLM2-135M)")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--device", default="cpu")


def _add_eval_args(p: argparse.ArgumentParser, data_flag: str) -> None:
    p.add_argument(data_flag, default=None, help="evaluation text for perplexity: wikitext2, c4, a .txt or .jsonl file"
                   + (" (default: wikitext2, unless --tasks is given)" if data_flag == "--data" else ""))
    p.add_argument("--eval-seqlen" if data_flag == "--eval" else "--seqlen", dest="eval_seqlen", type=int,
                   default=2048)
    p.add_argument("--max-windows", type=int, default=None, help="evaluate only the first N windows")
    p.add_argument("--eval-batch-size", type=int, default=1)
    p.add_argument("--tasks", default=None, help="zero-shot tasks, comma-separated: piqa, arc_easy, hellaswag, "
                   "openbookqa, lambada_openai, or .jsonl files (needs prunekit[tasks])")
    p.add_argument("--limit", type=int, default=None, help="score the first N items of each task")
    p.add_argument("--task-seed", type=int, default=None, help="score a seeded random --limit items instead")
    p.add_argument("--task-batch-size", type=int, default=32, help="continuations per forward pass when scoring tasks")
    p.add_argument("--baseline", default=None, help="task results to pair with on the same items: a run folder or "
                   "an eval JSON (e.g. of the dense model, scored once)")


def _add_teacher_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--teacher", default=None, help=f"{what}: a folder, a Hugging Face name or 'default'; by default the "
                   "model the folder was pruned from when its manifest records 'default' (a recorded path is never "
                   "followed: pass it here)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """Calibration, evaluation, execution and output flags of ``prune`` and ``quantize``."""
    _add_config_flags(p, CalibConfig)
    _add_eval_args(p, "--eval")
    p.add_argument("--eval-dense", action="store_true", help="also evaluate the model before pruning")
    p.add_argument("--offload", choices=OFFLOADS, default="auto",
                   help="disk: read, prune and write one block at a time (models larger than memory); auto: disk when "
                   "the weights need more than half the free memory")
    p.add_argument("--workers", type=int, default=1, help="data-parallel calibration over this many processes "
                   "(torchrun, gloo on CPU / NCCL on GPU): windows shared, statistics summed, layers solved in turn")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")


# The settings of a pruning run that a quantization run has too (its sparsity is 0)
QUANTIZE_SETTINGS = ("include", "exclude", "percdamp", "blocksize", "batch_size", "sequential", "calib_dtype")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prunekit", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", help="prune a model (and quantize it: --wbits) and save it")
    _add_model_args(p)
    _add_config_flags(p, PruneConfig)
    _add_config_flags(p, QuantConfig)
    _add_config_flags(p, RecoverConfig)
    _add_run_args(p)

    q = sub.add_parser("quantize", help="quantize a model's weights (RTN or GPTQ) and save it")
    _add_model_args(q)
    _add_config_flags(q, QuantConfig, aliases={"quant_method": "method"})
    _add_config_flags(q, PruneConfig, only=QUANTIZE_SETTINGS)
    _add_config_flags(q, RecoverConfig)
    _add_run_args(q)

    r = sub.add_parser("recover", help="block-wise reconstruction of a pruned folder against its dense model")
    _add_model_args(r)
    _add_teacher_arg(r, "the dense model whose block outputs are matched")
    _add_config_flags(r, RecoverConfig, only=("recover_epochs", "recover_lr", "recover_stream"))
    _add_config_flags(r, CalibConfig)
    r.set_defaults(nsamples=32)  # protocol P's calibration size: every window is trained on, every epoch
    _add_eval_args(r, "--eval")
    r.add_argument("--out", required=True)
    r.add_argument("--overwrite", action="store_true")

    e = sub.add_parser("eval", help="perplexity of a model")
    _add_model_args(e)
    _add_eval_args(e, "--data")
    e.add_argument("--out", default=None, help="JSON file to write (default: runs/eval-*.json)")
    e.add_argument("--overwrite", action="store_true", help="replace --out if it is a JSON prunekit wrote")
    e.add_argument("--sparse", nargs="?", const="auto", default=None, choices=("auto", *LAYOUTS),
                   help="evaluate under sparse execution, as served: sparsify first (a layout forces it)")

    f = sub.add_parser("finetune", help="recovery fine-tuning of a pruned model with its zeros locked")
    _add_model_args(f)
    f.add_argument("--data", default="c4", help="training text: c4, wikitext2, a .txt or .jsonl file (never the "
                   "evaluation text), or teacher: text sampled from the dense teacher (seeded, cached)")
    _add_teacher_arg(f, "the dense model to distill from (--loss kd, squarehead or a mix)")
    _add_config_flags(f, FinetuneConfig)
    f.add_argument("--checkpoint-every", type=int, default=0, help="save the training state beside --out every N "
                   "steps (0: never); an interrupted run goes on from it with --resume")
    f.add_argument("--resume", action="store_true", help="go on from the checkpoint an interrupted run left")
    _add_eval_args(f, "--eval")
    f.add_argument("--out", required=True)
    f.add_argument("--overwrite", action="store_true")

    lt = sub.add_parser("lottery", help="lottery-ticket experiment (MLP on scikit-learn digits)")
    lt.add_argument("--rounds", type=int, default=12)
    lt.add_argument("--prune-fraction", type=float, default=0.2)
    lt.add_argument("--seeds", type=int, default=2)
    lt.add_argument("--rewind-epochs", type=int, default=0, help="rewind to the weights after this many epochs")
    lt.add_argument("--epochs", type=int, default=15)
    lt.add_argument("--out", required=True, help="folder for lottery.json and lottery.png")
    lt.add_argument("--overwrite", action="store_true")

    x = sub.add_parser("export", help="store a pruned folder's weights in a sparse format (lossless)")
    x.add_argument("folder")
    x.add_argument("out")
    x.add_argument("--format", default="auto",
                   help="auto (smallest per layer), bitmask, nm or csr (not for a quantized folder)")
    x.add_argument("--overwrite", action="store_true")

    h = sub.add_parser("hardware", help="this machine, and what each sparsity pattern buys on it (measured)")
    h.add_argument("--model", default="default", help="model whose layer shapes are measured (config only)")
    h.add_argument("--patterns", default="50%,2:4,70%,90%", help="comma-separated: 50%%, 2:4, ...")
    h.add_argument("--batches", default="1,8,128", help="comma-separated batch sizes")
    h.add_argument("--dtype", choices=DTYPES, default="float32")
    h.add_argument("--reps", type=int, default=15)
    h.add_argument("--out", default=None, help="also write the full JSON here")
    h.add_argument("--overwrite", action="store_true", help="replace --out if it is a JSON prunekit wrote")

    b = sub.add_parser("bench", help="prefill/decode speed and memory of a pruned model, dense vs sparse execution")
    b.add_argument("--model", required=True, help="a pruned folder (or any model)")
    b.add_argument("--dtype", choices=DTYPES, default="float32")
    b.add_argument("--prompt-tokens", type=int, default=512)
    b.add_argument("--new-tokens", type=int, default=32)
    b.add_argument("--reps", type=int, default=5)
    b.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS), help="auto: measure per layer")
    b.add_argument("--device", default="cpu", help="cpu, or cuda: 2:4 layers run semi-structured (needs float16/bfloat16)")
    b.add_argument("--out", default=None, help="also write the JSON here")
    b.add_argument("--overwrite", action="store_true", help="replace --out if it is a JSON prunekit wrote")

    c = sub.add_parser("compare", help="every method × pattern: perplexity, cost, memory and speed, as a report")
    c.add_argument("--model", default="default")
    c.add_argument("--sparsity", default="0.5", help="comma-separated unstructured sparsities")
    c.add_argument("--patterns", default="unstructured,2:4")
    c.add_argument("--methods", default="magnitude,wanda,sparsegpt")
    c.add_argument("--calib", default="c4")
    c.add_argument("--nsamples", type=int, default=16)
    c.add_argument("--seqlen", type=int, default=2048, help="calibration window length (tokens)")
    c.add_argument("--eval-seqlen", type=int, default=2048, help="perplexity window length (tokens)")
    c.add_argument("--eval", default="wikitext2")
    c.add_argument("--max-windows", type=int, default=10)
    c.add_argument("--prompt-tokens", type=int, default=256)
    c.add_argument("--new-tokens", type=int, default=16)
    c.add_argument("--bench-reps", type=int, default=3)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--tasks", default=None, help="zero-shot tasks scored on dense and every run (as for prune)")
    c.add_argument("--limit", type=int, default=None, help="score the first N items of each task")
    c.add_argument("--task-seed", type=int, default=None)
    c.add_argument("--task-batch-size", type=int, default=32)
    c.add_argument("--check", default=None, choices=tuple(BUDGETS),
                   help="also run the shipping check's categories (probes included) at this budget, paired with dense")
    c.add_argument("--out", required=True, help="folder for report.md, results.json and the plots")
    c.add_argument("--overwrite", action="store_true")

    k = sub.add_parser("check", help="shipping check: perplexity, tasks and probes (arithmetic, retrieval, code, "
                       "reasoning) paired with a baseline; exit code 3 when a category regresses beyond its budget")
    k.add_argument("--model", default="default", help="the model to check (a pruned folder, a name, or 'default')")
    k.add_argument("--baseline", default=None, help="the dense model (scored here on the same items) or a previous "
                   "check.json; default: the embedded model a folder was pruned from, when its manifest records it")
    k.add_argument("--budget", default="quick", choices=tuple(BUDGETS), help="quick (minutes, the default) or full")
    k.add_argument("--max-drop", type=float, default=2.0, help="largest accuracy drop (points) a category may show")
    k.add_argument("--max-loss-increase", type=float, default=0.05,
                   help="largest relative increase of a per-token loss a category may show")
    k.add_argument("--dtype", choices=DTYPES, default="float32")
    k.add_argument("--device", default="cpu")
    k.add_argument("--out", required=True, help="folder for check.md, check.png and check.json")
    k.add_argument("--overwrite", action="store_true")

    i = sub.add_parser("info", help="per-layer sparsity of a pruned folder")
    i.add_argument("folder")
    i.add_argument("--json", action="store_true")
    return parser


def _eval_config(args) -> EvalConfig:
    return EvalConfig(args.eval_seqlen, args.max_windows, args.eval_batch_size)


def _eval_request(args, text_flag: str = "eval") -> EvalRequest:
    """The command's perplexity text and tasks."""
    tasks = args.tasks and TaskConfig(_csv(args.tasks), args.limit, args.task_seed, args.task_batch_size)
    return EvalRequest(getattr(args, text_flag), _eval_config(args), tasks, args.baseline)


def _model_config(args, seqlens: dict[str, int]):
    """The model's path, its windows checked against its positions from its config: before any weights load."""
    return model_path(args.model, seqlens)


def _model_record(args, path: str, model) -> dict:
    return model_record(args.model, path, args.dtype, model)


def _launch_workers(workers: int, argv: list[str]) -> None:
    """Run this same ``prune`` command as ``workers`` processes through torchrun (one CPU thread each unless
    OMP_NUM_THREADS says otherwise); the first prints the summary."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    rest, skip = [], False
    for a in argv:
        if skip or a.startswith("--workers="):
            skip = False
            continue
        skip = a == "--workers"
        if not skip:
            rest.append(a)
    try:
        torchrun(["--standalone", "--nproc-per-node", str(workers), "--module", "prunekit", *rest])
    except ChildFailedError as e:
        raise PrunekitError(f"a worker process failed (exit codes {[f.exitcode for f in e.failures.values()]}; its "
                            "error is above)") from None


def cmd_prune(args) -> dict | None:
    if args.workers < 1:
        raise PrunekitError(f"--workers must be >= 1, got {args.workers}")
    if args.workers > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_workers(args.workers, args.argv)
    config = _config(PruneConfig, args, quant=_config(QuantConfig, args), recovery=_config(RecoverConfig, args))
    return prune_run(args.model, args.out, config,
                     _config(CalibConfig, args), _eval_request(args),
                     eval_dense=args.eval_dense, dtype=args.dtype, device=args.device, offload=args.offload,
                     overwrite=args.overwrite, command=sys.argv)


def cmd_quantize(args) -> dict | None:
    """A pruning run at sparsity 0 with quantization: the same calibration walk, statistics and output."""
    if args.wbits == 0:
        raise PrunekitError("quantize needs --wbits (2 to 8)")
    args.sparsity = 0.0
    return cmd_prune(args)


def cmd_eval(args) -> dict:
    from .measure.tasks import brief, compare_tasks

    parse_device(args.device)  # a missing GPU: one line, before any work
    args.data = args.data or (None if args.tasks else "wikitext2")
    evaluation = _eval_request(args, "data").prepare()  # read and checked now, before any work
    name = f"{evaluation.text.name}-{evaluation.windows.seqlen}" if evaluation.text else "tasks"
    out = check_output_file(args.out or f"runs/eval-{Path(args.model).name}-{name}.json", args.overwrite)
    path = _model_config(args, evaluation.seqlens())
    model, tok, path = load_model(path, DTYPES[args.dtype], args.device)
    layouts = None
    if args.sparse:
        from .run.swap import sparsify

        layouts = Counter(c.layout for c in sparsify(model, layout=args.sparse, grids=model_grids(path)))
    t0 = time.perf_counter()
    evaluation.run("model", model, tok)
    res, scores = evaluation.ppl.get("model"), evaluation.scores.get("model")
    paired = compare_tasks(evaluation.baseline, scores) if evaluation.baseline and scores else None
    write_json(build_manifest(command=sys.argv, model=_model_record(args, path, model), sparse=layouts, evaluation=res,
                              tasks=scores, paired=paired, wall_seconds=round(time.perf_counter() - t0, 2)), out)
    summary = {"model": args.model, "out": str(out)} | ({"layouts": layouts} if layouts else {})
    if res:
        summary |= {"data": res["data"]["name"], "seqlen": res["seqlen"], "windows": res["windows"],
                    "perplexity": round(res["perplexity"], 4), "seconds": res["seconds"]}
    if scores:
        summary["tasks"] = {n: {k: t[k] for k in ("items", "acc", "acc_ci", "acc_norm", "acc_norm_ci", "signal",
                                                   "perplexity") if k in t} for n, t in brief(scores)["tasks"].items()}
        summary["mean_acc"] = round(scores["mean_acc"], 4)
    if paired:
        summary["paired"] = {n: m["acc"] for n, m in paired.items()}
    return summary


def cmd_finetune(args) -> dict:
    return finetune_run(args.model, args.out, _config(FinetuneConfig, args), args.data, _eval_request(args),
                        teacher=args.teacher, checkpoint_every=args.checkpoint_every, resume=args.resume,
                        dtype=args.dtype, device=args.device, overwrite=args.overwrite,
                        command=sys.argv)


def cmd_check(args) -> tuple[dict, int]:
    if args.max_drop < 0 or args.max_loss_increase < 0:
        raise PrunekitError("--max-drop and --max-loss-increase must be >= 0")
    return check_run(args.model, args.out, args.baseline, args.budget, Limits(args.max_drop, args.max_loss_increase),
                     dtype=args.dtype, device=args.device, overwrite=args.overwrite, command=sys.argv)


def cmd_recover(args) -> dict:
    return recover_run(args.model, args.out, _config(RecoverConfig, args, recover="block"), _config(CalibConfig, args),
                       _eval_request(args), teacher=args.teacher, dtype=args.dtype, device=args.device,
                       overwrite=args.overwrite, command=sys.argv)


def cmd_lottery(args) -> dict:
    from .train.digits import DigitsSetup, plot_lottery, run_lottery

    if min(args.rounds, args.seeds, args.epochs) < 1 or args.rewind_epochs < 0 or not 0 < args.prune_fraction < 1:
        raise PrunekitError("--rounds, --seeds and --epochs must be >= 1, --rewind-epochs >= 0 and --prune-fraction "
                            f"in (0, 1); got {args.rounds}, {args.seeds}, {args.epochs}, {args.rewind_epochs}, "
                            f"{args.prune_fraction}")
    with claim_output(args.out, args.overwrite) as claim:
        result = run_lottery(args.rounds, args.prune_fraction, args.seeds, args.rewind_epochs,
                             DigitsSetup(epochs=args.epochs))
        with claim.write() as tmp:
            write_json(result, tmp / "lottery.json")
            plot_lottery(result, tmp / "lottery.png")
    last = result["runs"][0][-1]
    return {"out": args.out, "final_sparsity": round(last["sparsity"], 4),
            "ticket": [round(r[-1]["ticket"], 4) for r in result["runs"]],
            "random_reinit": [round(r[-1]["random_reinit"], 4) for r in result["runs"]]}


def cmd_export(args) -> dict:
    from .store.export import export_folder

    return export_folder(args.folder, args.out, args.format, args.overwrite)


def _csv(text: str, kind=str) -> tuple:
    try:
        return tuple(kind(v.strip()) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise PrunekitError(f"cannot read {text!r} as a comma-separated list: {e}") from e


def cmd_hardware(args) -> dict:
    from .measure.hardware import hardware_report
    from .selection import Pattern

    patterns, batches = tuple(map(Pattern.parse, _csv(args.patterns))), _csv(args.batches, int)
    if not patterns or not batches or min(batches) < 1:
        raise PrunekitError(f"give at least one pattern, and batches as positive integers; got {args.patterns!r}, "
                            f"{args.batches!r}")
    if args.out:
        check_output_file(args.out, args.overwrite)
    report = hardware_report(args.model, patterns, batches, DTYPES[args.dtype], args.reps)
    if args.out:
        write_json(build_manifest(command=sys.argv, report=report), args.out)
    return {"machine": report["machine"], "gpu": report["gpu"], "shapes": report["shapes"],
            "verdicts": [s["verdict"] for s in report["summary"].values()]
            + ([report["gpu_verdict"]] if report["gpu_verdict"] else []),
            "gpu_2to4": report["gpu_2to4"]}


def cmd_bench(args) -> dict:
    from .measure.bench import bench_model

    if args.prompt_tokens < 1 or args.new_tokens < 2 or args.reps < 1:
        raise PrunekitError("--prompt-tokens and --reps must be >= 1, --new-tokens >= 2")
    if args.device.startswith("cuda"):
        from .run.semi_structured import support

        ok, why = support(args.device)
        if not ok or args.dtype == "float32":
            raise PrunekitError(f"--device {args.device} runs 2:4 semi-structured kernels, which need a CUDA GPU of "
                                f"compute capability >= 8.0 and --dtype float16 or bfloat16 ({why or 'float32 given'})")
    elif args.device != "cpu":
        raise PrunekitError(f"--device is cpu or cuda[:N], not {args.device!r}")
    if args.out:
        check_output_file(args.out, args.overwrite)
    path = _model_config(args, {"--prompt-tokens + --new-tokens": args.prompt_tokens + args.new_tokens})
    model, tok, path = load_model(path, DTYPES[args.dtype], args.device)
    result = bench_model(model, args.prompt_tokens, args.new_tokens, args.reps, args.layout, grids=model_grids(path))
    if args.out:
        write_json(build_manifest(command=sys.argv, model=_model_record(args, path, model), bench=result), args.out)
    return result


def cmd_compare(args) -> dict:
    from .measure.compare import CompareConfig, run_compare
    from .measure.report import write_report

    cfg = CompareConfig(model=args.model, sparsities=_csv(args.sparsity, float), patterns=_csv(args.patterns),
                        methods=_csv(args.methods), calib=args.calib, nsamples=args.nsamples, seqlen=args.seqlen,
                        eval_seqlen=args.eval_seqlen, eval_data=args.eval, max_windows=args.max_windows,
                        prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, bench_reps=args.bench_reps,
                        seed=args.seed, check=args.check,
                        tasks=args.tasks and TaskConfig(_csv(args.tasks), args.limit, args.task_seed, args.task_batch_size))
    with claim_output(args.out, args.overwrite) as claim:
        _model_config(args, {"--seqlen": cfg.seqlen, "--eval-seqlen": cfg.eval_seqlen})  # before any work
        results = run_compare(cfg)
        with claim.write() as tmp:
            files = write_report(results, tmp, "prunekit " + " ".join(sys.argv[1:]))
    return {"out": args.out, "files": files, "dense_perplexity": results["dense_perplexity"],
            "runs": [{k: r[k] for k in ("method", "pattern", "sparsity", "perplexity", "prune_seconds")}
                     | {"decode_speedup": r["bench"]["ratios"]["decode_speedup"]}
                     | ({"mean_acc": round(r["tasks"]["mean_acc"], 4)} if "tasks" in r else {})
                     | ({"failed": [c for c, e in r["check"].items() if e["fails"]]} if "check" in r else {})
                     for r in results["runs"]],
            "wall_seconds": results["wall_seconds"]}


def cmd_info(args) -> dict | None:
    rows, manifest = layer_table(args.folder)
    if args.json:
        return {"layers": rows, "summary": manifest.get("summary")}
    print(format_table(rows))
    if manifest.get("summary"):
        print(json.dumps(manifest["summary"], indent=2))
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else argv
        args = build_parser().parse_args(argv)
        args.argv = argv
    except PrunekitError as e:
        print(f"prunekit: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars; prunekit's own bars stay
    try:
        commands = {"prune": cmd_prune, "quantize": cmd_quantize, "eval": cmd_eval, "info": cmd_info,
                    "recover": cmd_recover, "check": cmd_check,
                    "finetune": cmd_finetune, "lottery": cmd_lottery, "export": cmd_export, "hardware": cmd_hardware,
                    "bench": cmd_bench, "compare": cmd_compare}
        out = commands[args.command](args)
    except PrunekitError as e:
        print(f"prunekit: error: {e}", file=sys.stderr)
        return 2
    out, code = out if isinstance(out, tuple) else (out, 0)  # ``check`` says whether the gate passed
    if out is not None:
        print(json.dumps(out, indent=2, ensure_ascii=False))
    return code


if __name__ == "__main__":
    sys.exit(main())
