"""A running trial's checkpoint (weights, optimizer and early-stopping state after its last finished
epoch) and the atomic weight files a finished trial keeps."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from common import results


def save_weights(model, path: Path) -> None:
    """model.save_weights, atomically: a temporary file, then a rename."""
    tmp = path.with_name(f".{path.name}.tmp.weights.h5")  # Keras insists on the .weights.h5 suffix
    model.save_weights(tmp)
    os.replace(tmp, path)


def layers_only(model):
    """The same layers as a model without optimizer: its weights files hold the trained weights alone
    (a third of the size with Adam), and load into any compiled model of the recipe without warnings."""
    import keras

    return keras.Model(model.inputs, model.outputs)


def history_csv(history: list[dict]) -> str:
    return pd.DataFrame(history).to_csv(index=False)


class Checkpoint:
    """Weights, optimizer and early-stopping state after the last finished epoch of one trial.

    Each epoch's weights go to a new file and state.json (written atomically, last) names the
    files it belongs to, so a kill at any moment leaves a consistent checkpoint behind.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.state_path = directory / results.CHECKPOINT_STATE

    def load_state(self) -> dict | None:
        if not self.state_path.exists():
            return None
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def save(self, model, state: dict, improved: bool) -> None:
        """Save after an epoch; records the weight files' names in `state`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        epoch = state["epoch"]
        state["weights"] = f"epoch_{epoch}.weights.h5"
        save_weights(model, self.directory / state["weights"])
        if improved:
            state["best_weights"] = f"best_epoch_{epoch}.weights.h5"
            shutil.copyfile(self.directory / state["weights"], self.directory / state["best_weights"])
        results.atomic_write_json(self.state_path, state)
        results.atomic_write_text(self.directory / results.HISTORY_FILE, history_csv(state["history"]))
        keep = {state["weights"], state.get("best_weights"), self.state_path.name, results.HISTORY_FILE}
        for path in self.directory.iterdir():
            if path.name not in keep and not path.name.startswith("."):
                path.unlink(missing_ok=True)

    def restore(self, model, name: str) -> None:
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.directory / name)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
