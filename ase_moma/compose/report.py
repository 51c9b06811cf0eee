"""The composition report: a bar chart of module weights beside each module's proxy MAE."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def weights_chart(recipe: dict[str, Any], path: str | Path) -> None:
    """Write a PNG: one bar per module (its weight), its proxy MAE on a second axis (the kNN proxy's, or
    what the recipe's ``proxy_label`` names)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    modules = recipe["modules"]
    if recipe.get("potential"):  # the pretrained potential is a candidate beside the modules
        pretrained = recipe["potential"]["pretrained"]
        modules = [{"name": "pretrained", "weight": pretrained["weight"],
                    "proxy_mae": pretrained["proxy_mae"]}, *modules]
    task = recipe["task"]
    figure = Figure(figsize=(max(4.0, 0.7 * len(modules) + 2.5), 3.6), layout="constrained")
    axes = figure.add_subplot()
    names = [m["name"] for m in modules]
    positions = range(len(modules))
    axes.bar(positions, [m["weight"] for m in modules], color="tab:blue", label="weight")
    axes.set_ylabel("weight", color="tab:blue")
    axes.set_ylim(0, 1)
    axes.set_xticks(list(positions), names, rotation=40, ha="right", fontsize=8)
    if modules:
        mae = axes.twinx()
        mae.plot(positions, [m["proxy_mae"] for m in modules], "o", color="tab:red")
        unit = f" ({task['unit']})" if task.get("unit") else ""
        mae.set_ylabel(recipe.get("proxy_label", f"kNN proxy MAE{unit}"), color="tab:red")
        mae.set_ylim(bottom=0)
    else:
        axes.text(0.5, 0.5, "no modules (no_hub baseline)", ha="center", va="center",
                  transform=axes.transAxes)
    axes.set_title(f"{recipe['strategy']} weights for {task['task']}:{task['target']} "
                   f"(M = {task['train_size']})", fontsize=9)
    figure.savefig(path, format="png", dpi=120)
