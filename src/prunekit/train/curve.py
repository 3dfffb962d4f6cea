"""The loss curve of a recovery run, as JSON and a figure: the student's loss and cross-entropy per step, and the
teacher's cross-entropy on the same windows (the gap distillation is meant to close), against tokens seen."""

from __future__ import annotations

import io


def curve_record(log: dict) -> dict:
    """The per-step series of a ``finetune`` log, with the tokens seen after each step."""
    per_step = log["batch_size"] * log["seqlen"]
    steps = len(log["losses"])
    return {"tokens": [per_step * (i + 1) for i in range(steps)], "loss": log["losses"], "loss_name": log["loss"],
            "student_ce": log["student_ce"], "teacher_ce": log["teacher_ce"], "seconds_at": log["seconds_at"],
            "resumed_at": log["resumed_at"]}


def plot_curve(record: dict) -> bytes:
    """A PNG of ``curve_record``'s series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    tokens = record["tokens"]
    ax.plot(tokens, record["student_ce"], label="student cross-entropy")
    if any(t is not None for t in record["teacher_ce"]):
        ax.plot(tokens, record["teacher_ce"], ":", label="dense teacher cross-entropy (same windows)")
    if record["loss_name"] != "ce":
        ax.plot(tokens, record["loss"], "--", label=f"training loss ({record['loss_name']})")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
