"""Pictures of the measurements, as PNG files (matplotlib, without a display)."""

from __future__ import annotations

from pathlib import Path


def plot_curves(curves: dict[str, dict], path: str | Path, title: str = "Self-reinforcement of repetition") -> None:
    """A PNG of token probability per repetition, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    for name, curve in curves.items():
        ax.plot(curve["repetition"], curve["token_probability"], marker="o", markersize=3, label=name)
    ax.set_xlabel("repetition of the sentence")
    ax.set_ylabel("mean probability of its tokens")
    ax.set_ylim(0, 1)
    ax.set_xticks(range(1, len(next(iter(curves.values()))["repetition"]) + 1, 2))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
