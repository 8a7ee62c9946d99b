"""``wandb agent`` for a sweep whose server is a file on this disk (W&B's server cannot be reached from CI).

W&B's own agent loop runs (``wandb.wandb_agent.Agent.run``: it builds each trial's command and environment,
starts it with ``AgentProcess``, watches it and counts it). Only the three server calls are answered here:
the sweep's config, the agent's registration, and the heartbeat, which hands out the next trial that W&B's
sweep engine (``sweeps.next_run``) proposes for the sweep file, once, and records it in ``STATE``.

    python tests/sweep_agent.py SWEEP_FILE STATE --count 1 SWEEP_ID
"""

from __future__ import annotations

import json
import os
import queue
import sys
import time
from pathlib import Path

import sweeps
import wandb
import yaml
from wandb import wandb_agent
from wandb.apis.public import sweeps as server_calls


def main(sweep_file: str, state_file: str, count_flag: str, count: str, sweep_id: str) -> None:
    assert count_flag == "--count"
    config_text = Path(sweep_file).read_text()
    config = sweeps.config.fill_validate_schema(yaml.safe_load(config_text))
    state = Path(state_file)
    handed_out: list[dict] = json.loads(state.read_text()) if state.exists() else []

    def heartbeat(api, agent_id, metrics, run_states):
        if run_states:  # a trial of this agent is running
            return []
        runs = [sweeps.SweepRun(name=t["run_id"], config={k: {"value": v} for k, v in t["params"].items()},
                                state=sweeps.RunState.finished) for t in handed_out]  # fmt: skip
        trial = sweeps.next_run(config, runs, validate=True)
        if trial is None:
            return []
        params = json.loads(json.dumps({k: v["value"] for k, v in trial.config.items()}, default=float))
        run_id = f"trial{len(handed_out) + 1:03d}"
        handed_out.append({"run_id": run_id, "params": params, "agent": os.getpid(), "time": time.time()})
        state.write_text(json.dumps(handed_out))
        return [{"type": "run", "run_id": run_id, "program": config["program"],
                 "args": {k: {"value": v} for k, v in params.items()}}]  # fmt: skip

    server_calls._sweep_with_runs = lambda api, sweep, specs: {"config": config_text}
    server_calls._register_agent = lambda api, host, sweep_id: {"id": f"agent-{os.getpid()}"}
    server_calls._agent_heartbeat = heartbeat
    wandb.Api = lambda *args, **kwargs: None  # the agent renews its API client after each trial
    os.environ["WANDB_SWEEP_ID"] = sweep_id  # as `wandb agent` sets it
    wandb_agent.Agent(api=None, queue=queue.Queue(), sweep_id=sweep_id, count=int(count)).run()


if __name__ == "__main__":
    main(*sys.argv[1:])
