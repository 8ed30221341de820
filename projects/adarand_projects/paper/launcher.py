"""Launching a table's unfinished runs with submitit: one job per run, its local executor by default,
SLURM on request; a run with ``last.pth`` resumes (``--resume``)."""
import os
import sys
import time


def make_executor(folder, cluster="local", partition="", gpus=1, cpus=10, timeout_min=4320, name="adarand"):
    """A submitit executor: ``local`` (processes on this machine) or ``slurm`` (one job per run)."""
    import submitit

    if cluster not in ("local", "slurm"):
        raise ValueError(f"cluster {cluster!r}; expected local or slurm")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {"timeout_min": timeout_min, "name": name, "nodes": 1, "tasks_per_node": 1}
    if cluster == "slurm":
        params.update(gpus_per_node=gpus, cpus_per_task=cpus)
        if partition:
            params["slurm_partition"] = partition
    executor.update_parameters(**params)
    return executor


def launch(runs, executor, repo_root=".", nproc_per_node=1, max_parallel=1, poll_s=1.0, progress=True):
    """Run every unfinished run as one job (``--resume`` where last.pth exists), at most ``max_parallel``
    at a time (0 = all at once, e.g. SLURM queues them); returns {run: error} of the failed ones."""
    from submitit.helpers import CommandFunction
    from tqdm import tqdm

    pending = [r for r in runs if r.status() != "done"]
    failed, active = {}, []
    env = dict(os.environ)
    with tqdm(total=len(runs), initial=len(runs) - len(pending), desc="runs", unit="run", disable=not progress) as bar:
        while pending or active:
            while pending and (max_parallel <= 0 or len(active) < max_parallel):
                run = pending.pop(0)
                argv = run.argv(python=sys.executable, nproc_per_node=nproc_per_node, quiet=True)
                job = executor.submit(CommandFunction(argv, verbose=False, cwd=os.path.abspath(repo_root), env=env))
                active.append((run, job))
            time.sleep(poll_s)
            for run, job in [a for a in active if a[1].done()]:
                active.remove((run, job))
                error = job.exception()
                if error is not None:
                    failed[run] = f"{error} (job log: {job.paths.stderr})"
                bar.update(1)
                bar.set_postfix(failed=len(failed))
    return failed
