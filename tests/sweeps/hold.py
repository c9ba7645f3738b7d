"""A callback for the cluster tests: chosen trials say where they run (process, and Ray node), then wait for
the test's go."""

import json
import os
import sys
import time
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig

# A held trial gives up waiting after this long, so a failed test cannot leave a sweep behind forever.
HOLD_LIMIT_S = 300


class HoldTrial(L.Callback):
    def __init__(self, folder: str, trials: list[int]) -> None:
        self.folder, self.trials = Path(folder), set(trials)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        number = int(HydraConfig.get().job.num)
        if number not in self.trials:
            return
        where = {"trial": number, "pid": os.getpid()}
        ray = sys.modules.get("ray")  # imported in a Ray worker; never imported here for a submitit job
        if ray is not None and ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id()
            (node,) = [n for n in ray.nodes() if n["NodeID"] == node_id]
            where["node_manager_port"] = node["NodeManagerPort"]
        (self.folder / f"at-{number}.json").write_text(json.dumps(where))
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not (self.folder / f"go-{number}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
