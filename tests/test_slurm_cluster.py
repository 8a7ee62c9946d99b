"""The sbatch templates submitted to a real one-node SLURM cluster (slurmctld, slurmd and munge on localhost),
as a user submits them from a fresh clone, with only what a CPU-only node needs changed and a short --time.

Marked ``slurm``: `bash .ci/slurm` starts the cluster and runs these; plain ``pytest`` leaves them out.
Without a cluster they fail, never skip. ``test_requeue.py`` checks the same against a stand-in ``scontrol``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(1200)]

CPU_NODE = ["--gpus-per-node=0", "--cpus-per-task=1"]  # what a CPU-only node needs besides --ntasks-per-node
EXTRA_STEPS = 10  # the requeued run trains this many generator steps past the one it stopped at
# job states on the way (SIGNALING: while the time-limit signal is delivered)
UNFINISHED = ("PENDING", "CONFIGURING", "RUNNING", "SIGNALING", "COMPLETING", "REQUEUED", "STAGE_OUT")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """What a fresh clone holds: the tracked files (and new ones not ignored), no runs, no caches."""
    if not os.environ.get("SLURM_CONF") or shutil.which("sbatch") is None:
        pytest.fail("no SLURM cluster: run these tests through `bash .ci/slurm` (as root)")
    info = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    assert info.returncode == 0 and info.stdout.split() == ["idle"], info.stdout + info.stderr
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    root = tmp_path_factory.mktemp("clone")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    assert (root / "runs" / "slurm").is_dir() and not list((root / "runs" / "slurm").glob("*.out"))
    return root


@pytest.fixture(scope="module", autouse=True)
def cancel_leftover_jobs():
    """A failed test leaves no job behind to hold the node's CPUs."""
    yield
    for job_id in SUBMITTED:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)


SUBMITTED: list[str] = []


def submit(
    clone: Path,
    *options: str,
    args: tuple[str, ...] = (),
    config: str = "configs/dcgan.yaml",
    template: str = "1node.sbatch",
    **extra_env: str,
) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # where `lightning-gan` is installed
        "PYTHONPATH": str(clone),
        "CONFIG": config,
        "OMP_NUM_THREADS": "1",
        "LIGHTNING_GAN_CACHE": str(clone / ".cache"),
        **extra_env,
    }
    out = subprocess.run(
        ["sbatch", *options, f"configs/slurm/{template}", *args],
        cwd=clone, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    SUBMITTED.append(re.fullmatch(r"Submitted batch job (\d+)\s*", out.stdout).group(1))
    return SUBMITTED[-1]


def job(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def wait(job_id: str, done, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while not done(info := job(job_id)):
        assert time.monotonic() < deadline, f"job {job_id} still {info['JobState']} after {timeout} s"
        time.sleep(0.2)
    return info


def exited_75(log: str) -> set[int]:
    """The tasks srun says exited with status 75 ("task 1: ...", "tasks 0-1: ...", "tasks 0,2-3: ...")."""
    tasks = set()
    for spec in re.findall(r"tasks? ([\d,-]+): Exited with exit code 75", log):
        for part in spec.split(","):
            first, _, last = part.partition("-")
            tasks.update(range(int(first), int(last or first) + 1))
    return tasks


def steps_logged(run_dir: Path) -> list[int]:
    (metrics,) = run_dir.glob("lightning_logs/version_*/metrics.csv")
    with open(metrics, newline="") as file:
        return [int(row["step"]) for row in csv.DictReader(file) if row["loss/g"]]


def test_time_limited_jobs_save_requeue_once_and_resume_their_own_run_with_1_and_2_tasks(clone, tmp_path):
    # Two jobs of the same name side by side: 1 task, and 2 tasks (DDP over gloo). Each trains "for ever"
    # (its budget file says so) until SLURM's time-limit signal.
    jobs = {}
    for tasks in (1, 2):
        budget = tmp_path / f"budget{tasks}.yaml"
        budget.write_text("trainer:\n  max_steps: 1000000\n")
        args = (f"--config={budget}", "--trainer.log_every_n_steps=1", "--checkpoint.every_n_train_steps=20")
        jobs[submit(clone, *CPU_NODE, f"--ntasks-per-node={tasks}", "--time=4", args=args)] = budget

    stopped_at = {}
    pending = set(jobs)
    deadline = time.monotonic() + 600
    while pending:  # as soon as a job has requeued, its run gets a finite budget for the requeued job to read
        assert time.monotonic() < deadline, {j: job(j)["JobState"] for j in pending}
        for job_id in sorted(pending):
            log_file = clone / "runs" / "slurm" / f"lightning-gan-{job_id}.out"
            # SLURM creates the log when the job starts
            log = log_file.read_text(errors="replace") if log_file.exists() else ""
            found = re.search(r"SlurmRequeue: SIGUSR1 at generator step (\d+)", log)
            if found:
                stopped_at[job_id] = int(found.group(1))
                jobs[job_id].write_text(f"trainer:\n  max_steps: {stopped_at[job_id] + EXTRA_STEPS}\n")
                pending.discard(job_id)
            else:
                assert job(job_id)["JobState"] in UNFINISHED, log[-3000:]
        time.sleep(0.2)

    for job_id, tasks in zip(jobs, (1, 2), strict=True):
        info = wait(job_id, lambda i: i["JobState"] not in UNFINISHED, 600)
        log = (clone / "runs" / "slurm" / f"lightning-gan-{job_id}.out").read_text(errors="replace")
        # Requeued once, before the time limit (tasks that hung would have been killed there: TIMEOUT, no
        # restart), and the requeued job finished its budget.
        state = (info["JobState"], info["Restarts"], info["ExitCode"])
        assert state == ("COMPLETED", "1", "0:0"), log[-3000:]
        assert log.count(f"requeueing job {job_id}") == 1
        # every task had exited (75: stopped for the time limit) before the script requeued the job; SLURM's
        # own line for a requeue ("CANCELLED ... DUE TO JOB REQUEUE") is the only cancellation
        first, _, _ = re.split(rf"(\[train.sh [^]]*\] every task stopped .* requeueing job {job_id})", log)
        assert exited_75(first) == set(range(tasks)) and "Traceback" not in log
        assert re.findall(r"CANCELLED AT \S+ DUE TO (\w+(?: \w+)*)", log) in ([], ["JOB REQUEUE"])
        assert "TIME LIMIT" not in log
        run_dir = clone / "runs" / "slurm" / f"lightning-gan-{job_id}"
        own = f"{run_dir.relative_to(clone)}/lightning_logs/version_0/checkpoints/last.ckpt"
        # its own run, not the other job's of the same name
        assert f"Restored all states from the checkpoint at {own}" in log, log[-3000:]
        assert [p.name for p in (run_dir / "lightning_logs").iterdir()] == ["version_0"]
        checkpoints = run_dir / "lightning_logs" / "version_0" / "checkpoints"
        assert not [p for p in checkpoints.iterdir() if "exception" in p.name or "hpc" in p.name]
        final = stopped_at[job_id] + EXTRA_STEPS
        last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
        assert last["global_step"] == final
        assert steps_logged(run_dir) == list(range(1, final + 1)), f"{tasks} task(s)"  # every step once
        print(
            f"job {job_id} ({tasks} task(s)): {info['JobState']}, restarts {info['Restarts']}, requeued at "
            f"generator step {stopped_at[job_id]}, resumed run trained {stopped_at[job_id] + 1}..{final}"
        )


@pytest.mark.parametrize(
    ("options", "args", "message"),
    [
        (["--ntasks-per-node=1", "--time=3"], (), "--time=00:03:00 is too short for --signal=SIGUSR1@120"),
        (["--ntasks-per-node=1", "--time=5"], ("--trainer.devices", "2"),
         "--trainer.devices=2 disagrees with the job's --ntasks-per-node=1"),
        (["--ntasks-per-node=2", "--time=5"], ("--trainer.num_nodes=2",),
         "--trainer.num_nodes=2 disagrees with the job's --nodes=1"),
    ],
)  # fmt: skip
def test_launch_settings_that_cannot_work_fail_at_once_saying_what_to_change(clone, options, args, message):
    job_id = submit(clone, *CPU_NODE, *options, args=args)
    info = wait(job_id, lambda i: i["JobState"] not in UNFINISHED, 120)
    log = (clone / "runs" / "slurm" / f"lightning-gan-{job_id}.out").read_text(errors="replace")
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "2:0", "0")
    assert message in log, log
    print(f"job {job_id} ({' '.join(options + list(args))}): {info['JobState']}, exit {info['ExitCode']}, "
          f"restarts {info['Restarts']}, in {info['RunTime']}: {message}")  # fmt: skip
    assert "srun" not in log and not (clone / "runs" / "slurm" / f"lightning-gan-{job_id}").exists()


def test_a_requeued_sweep_job_finishes_its_interrupted_trial_before_its_agent_asks_for_another(
    clone, tmp_path
):
    """configs/slurm/sweep.sbatch with W&B's own agent loop (tests/sweep_agent.py: only the server's answers
    come from a file, since W&B's server cannot be reached here), offline, two trials per job."""
    sweep = yaml.safe_load((clone / "configs" / "sweeps" / "ttur_ncritic.yaml").read_text())
    budget = tmp_path / "budget.yaml"
    budget.write_text("trainer:\n  max_steps: 1000000\n")
    at = sweep["command"].index("${args}")
    sweep["command"][at:at] = [f"--config={budget}", "--checkpoint.every_n_train_steps=20"]
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    state = tmp_path / "handed_out.json"
    agent = f"{sys.executable} {clone / 'tests' / 'sweep_agent.py'} {tmp_path / 'sweep.yaml'} {state}"
    job_id = submit(
        clone, *CPU_NODE, "--time=4", args=("sweep42", "2"), template="sweep.sbatch",
        AGENT=agent, WANDB_MODE="offline", WANDB_SILENT="true",
    )  # fmt: skip
    log_file = clone / "runs" / "slurm" / f"lightning-gan-sweep-{job_id}.out"
    runs = clone / "runs" / "wgangp" / "wandb"

    def log() -> str:
        return log_file.read_text(errors="replace") if log_file.exists() else ""

    deadline = time.monotonic() + 600
    while not (found := re.search(r"SlurmRequeue: SIGUSR1 at generator step (\d+)", log())):
        assert job(job_id)["JobState"] in UNFINISHED and time.monotonic() < deadline, log()[-3000:]
        time.sleep(0.2)
    stopped_at = int(found.group(1))
    budget.write_text(f"trainer:\n  max_steps: {stopped_at + EXTRA_STEPS}\n")  # for the requeued trial
    first = json.loads(state.read_text())[0]["run_id"]
    last = runs / first / "lightning-gan" / first / "checkpoints" / "last.ckpt"

    def step(checkpoint: Path) -> int | None:
        if not checkpoint.exists():
            return None
        return torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]

    while step(last) != stopped_at + EXTRA_STEPS:
        assert job(job_id)["JobState"] in UNFINISHED and time.monotonic() < deadline, log()[-3000:]
        time.sleep(0.2)
    finished_first = last.stat().st_mtime
    budget.write_text("trainer:\n  max_steps: 2\n")  # the next trial is short

    info = wait(job_id, lambda i: i["JobState"] not in UNFINISHED, 600)
    text = log()
    assert (info["JobState"], info["Restarts"], info["ExitCode"]) == ("COMPLETED", "1", "0:0"), text[-3000:]
    handed = json.loads(state.read_text())
    # one trial before the requeue, then the interrupted one finished, and only then the agent's next trial
    assert [t["run_id"] for t in handed] == [first, "trial002"]
    assert handed[1]["time"] > finished_first
    assert text.count(f"requeueing job {job_id}") == 1 and "finishing the interrupted trial first" in text
    assert f"W&B run {first} has a checkpoint" in text and "Traceback" not in text
    assert sorted(p.name for p in runs.iterdir()) == [first, "trial002"]
    assert len(list((runs / first / "wandb").glob(f"offline-run-*-{first}"))) == 2  # one W&B run, resumed
    second = runs / "trial002" / "lightning-gan" / "trial002" / "checkpoints" / "last.ckpt"
    assert step(second) == 2
    records = clone / "runs" / "slurm" / f"lightning-gan-sweep-{job_id}"
    assert not (records / "interrupted-trial.sh").exists()
    assert len((records / "trials-finished").read_text().splitlines()) == 2
    print(
        f"sweep job {job_id}: {info['JobState']}, restarts {info['Restarts']}, trial {first} requeued at "
        f"generator step {stopped_at}, finished at {stopped_at + EXTRA_STEPS} before trial002 was asked for"
    )
