"""Data-parallel training over several worker processes with ``tf.distribute.MultiWorkerMirroredStrategy``.

Every worker holds a full replica of the model, reads only its own shard of the dataset through
``readers.arrow_dataset`` (row group i goes to worker i % N) and takes part in one all-reduce of the
gradients per step, so one step trains on ``N * batch_size`` events. All workers run the same number of
steps per epoch, computed from the Parquet footers as the smallest shard divided by the per-worker batch
size: a worker whose shard ran out would otherwise leave the others waiting in a collective forever. The
readers stream forever (``num_epochs=None``), so the rows a bigger shard did not reach in one epoch are
seen in the next one. The chief (worker 0) saves the model in the native ``.keras`` format and every
worker writes a JSON report (its shard, steps, samples, history, wall time) to the output directory.

Keras 3's ``Model.fit`` does not work under this strategy with more than one worker (keras-team/keras#20585),
so the workers run fit's loop themselves around the model's own ``train_step``: same loss, optimizer and
metrics as compiled by ``models``; the history holds the per-epoch training loss and metrics, computed
over the batches of all workers (every worker reports the same values).

On one machine, ``train_multi_worker`` starts the workers as local processes on free 127.0.0.1 ports::

    from lhc_assets.ml.distributed import train_multi_worker
    result = train_multi_worker("data/train", "hlf", "hlf_classifier", workers=2, epochs=5,
                                batch_size=128, seed=1, output_dir="runs/hlf-2w")

On several machines, write one spec (JSON) with the real addresses, one ``host:port`` per worker, the
first being the chief, and a dataset path and output directory that are the same on every host (shared
filesystem)::

    {"dataset": "/shared/data/train", "inputs": "inclusive", "model": "inclusive_classifier",
     "model_kwargs": {"learning_rate": 0.001}, "workers": ["node1:2222", "node2:2222", "node3:2222"],
     "epochs": 10, "batch_size": 128, "seed": 1, "output_dir": "/shared/runs/inclusive-3w"}

then start exactly one process per host, with that host's position in the list, e.g. on node2::

    python -m lhc_assets.ml.distributed worker --spec spec.json --index 1

The ports must be reachable between the hosts (gRPC). Optional spec keys: ``steps_per_epoch`` (instead of
the smallest shard), ``collective_timeout_s`` (abort a collective that waits longer, e.g. behind a stalled
peer; default: no limit). A worker that dies is detected by TensorFlow's coordination service (missed
heartbeats, about ten seconds) and the others then fail too, so a run on several hosts fails as a whole.

TensorFlow reads ``TF_CONFIG`` when the strategy is created and collectives must be configured before the
TensorFlow runtime starts, so the worker sets ``TF_CONFIG`` first and imports TensorFlow afterwards; this
module imports no TensorFlow at import time (the launcher never does).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lhc_assets.ml.contract import KERAS_MODELS, MODEL_FILE

SPEC_FILE = "spec.json"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
# How the gRPC server reports a port that another process took between picking and binding it.
_PORT_CLASH = ("Address already in use", "Could not start gRPC server", "Failed to add port")
_LOG_TAIL_LINES = 40


def report_path(output_dir: str | Path, index: int) -> Path:
    """Where worker ``index`` writes its JSON report."""
    return Path(output_dir) / f"worker-{index}.json"


def _failure_path(output_dir: str | Path, index: int) -> Path:
    return Path(output_dir) / f"worker-{index}.failed"


def _failure_time(output_dir: Path, index: int) -> float:
    try:
        return float(_failure_path(output_dir, index).read_text())
    except (OSError, ValueError):
        return float("inf")  # killed or crashed without a Python exception


def _check_spec(spec: dict[str, Any]) -> None:
    missing = {"dataset", "inputs", "model", "workers", "epochs", "batch_size", "output_dir"} - spec.keys()
    if missing:
        raise ValueError(f"spec lacks {sorted(missing)}")
    if spec["model"] not in KERAS_MODELS:
        raise ValueError(f"model must be one of {sorted(KERAS_MODELS)}, got {spec['model']!r}")
    if KERAS_MODELS[spec["model"]].inputs != spec["inputs"]:
        raise ValueError(f"{spec['model']} takes inputs {KERAS_MODELS[spec['model']].inputs!r}, not {spec['inputs']!r}")
    if not spec["workers"] or len(set(spec["workers"])) != len(spec["workers"]):
        raise ValueError(f"workers must be distinct host:port addresses, got {spec['workers']}")
    if spec["epochs"] < 1 or spec["batch_size"] < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {spec['epochs']}, {spec['batch_size']}")


def _exit_with_parent(parent_pid: int) -> None:
    """Exit when the launcher dies (even by SIGKILL), instead of waiting in a collective forever."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)  # no clean-up: the interpreter may be blocked inside TensorFlow
            time.sleep(1.0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def run_worker(spec: dict[str, Any], index: int) -> dict[str, Any]:
    """Train as worker ``index`` of ``spec["workers"]``; write and return this worker's report.

    Once per process, before TensorFlow has run anything: TF_CONFIG is set here, then TensorFlow imported,
    and the strategy configures the runtime's collectives when it starts it.
    """
    _check_spec(spec)
    addresses = list(spec["workers"])
    n = len(addresses)
    if not 0 <= index < n:
        raise ValueError(f"index must be in [0, {n}), got {index}")
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
    started = time.monotonic()

    import keras
    import tensorflow as tf

    from lhc_assets.ml import models, readers
    from lhc_assets.ml.training import last_steps

    dataset, inputs, batch_size, seed = spec["dataset"], spec["inputs"], int(spec["batch_size"]), spec.get("seed")
    output_dir = Path(spec["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)

    # AUTO lets TensorFlow choose: ring all-reduce on CPU, NCCL on GPU hosts.
    timeout = spec.get("collective_timeout_s")
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO,
            timeout_seconds=None if timeout is None else float(timeout),
        )
    )
    if strategy.num_replicas_in_sync != n:
        raise RuntimeError(f"{strategy.num_replicas_in_sync} replicas in sync for {n} workers: one device each")

    # The reader's own shard rule (row group i -> shard i % n), so the step count matches what is read.
    groups = readers._row_groups(dataset, readers.columns_for(inputs))
    shards = [readers._shard(groups, k, n) for k in range(n)]
    shard_rows = [sum(g.num_rows for g in shard) for shard in shards]
    steps_per_epoch = int(spec.get("steps_per_epoch") or min(shard_rows) // batch_size)
    if steps_per_epoch < 1:
        raise ValueError(f"the smallest shard holds {min(shard_rows)} rows, fewer than one batch of {batch_size}")

    if seed is not None:
        keras.utils.set_random_seed(int(seed))  # same initial weights everywhere (the chief's are broadcast anyway)
    with strategy.scope():
        model = KERAS_MODELS[spec["model"]].build(**{"seed": seed, **spec.get("model_kwargs", {})})

    options = tf.data.Options()
    # Sharding is done by the reader; tf.data must not shard (or rebatch) the worker's stream again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    epochs = int(spec["epochs"])
    history: dict[str, list[float]] = {}
    steps = 0
    with contextlib.ExitStack() as stack:
        local_spec: list = []

        def input_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            if (context.input_pipeline_id, context.num_input_pipelines) != (index, n):
                raise RuntimeError(f"TensorFlow sees input pipeline {context.input_pipeline_id} of "
                                   f"{context.num_input_pipelines}, the reader shard {index} of {n}")
            stream = stack.enter_context(readers.arrow_dataset(
                dataset, inputs, batch_size=batch_size, num_epochs=None, shuffle_row_groups=True,
                seed=None if seed is None else int(seed) + index, cur_shard=index, shard_count=n,
                drop_remainder=True,  # full batches only: every step sees batch_size rows on every worker
            ))
            steps = models.sequence_steps(model)
            if steps is not None:  # the model reads only the last rows of each particle list
                stream = last_steps(stream, steps)
            local_spec.append(stream.element_spec)
            return stream.with_options(options)

        # Per-worker batches as the reader makes them (experimental_distribute_dataset would take the batch
        # size as global and split every batch between the workers).
        iterator = iter(strategy.distribute_datasets_from_function(input_fn))

        # Keras 3's fit() fails under MultiWorkerMirroredStrategy with several workers (keras-team/keras#20585:
        # it reduces whole PerReplica structures, and scalar metrics with axis=0), so this is fit's loop by
        # hand around Keras' own train_step. The model, loss, metric and optimizer variables are created
        # first, in cross-replica context, from the batch shapes alone, as fit() does.
        with strategy.scope():
            model._symbolic_build(data_batch=local_spec[0])

        # No XLA: the iterator op cannot be compiled (so the models' jit_compile setting does not apply here).
        @tf.function(jit_compile=False)
        def train_step(iterator: Any) -> None:
            # The optimizer all-reduces (sums) the gradients; Keras scales each replica's loss by 1/replicas.
            strategy.run(model.train_step, args=(next(iterator),))

        train_started = time.monotonic()
        for epoch in range(epochs):
            model.reset_metrics()
            for _ in range(steps_per_epoch):
                train_step(iterator)
                steps += 1
            # Metric variables are summed over the workers when read here (cross-replica context, a
            # collective): every worker gets the same global loss and accuracy.
            logs = {name: float(value) for name, value in model.get_metrics_result().items()}
            for name, value in logs.items():
                history.setdefault(name, []).append(value)
            if index == 0:
                print(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k}={v:.4f}" for k, v in logs.items()),
                      flush=True)
        train_seconds = time.monotonic() - train_started

    # Keras 3 writes a .keras file with plain local I/O (no collectives), so only the chief needs to save.
    model_path = None
    if index == 0:
        model_path = output_dir / MODEL_FILE
        model.save(model_path)

    report = {
        "index": index,
        "address": addresses[index],
        "workers": n,
        "shard_row_groups": [[g.file.name, g.index] for g in shards[index]],
        "shard_rows": shard_rows[index],
        "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch,
        "steps": steps,
        "samples": steps * batch_size,
        "history": history,
        # Equal on every worker when the replicas stayed in sync (gradients combined, not trained apart).
        "weights_sha256": hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest(),
        "model_path": None if model_path is None else str(model_path),
        "train_seconds": train_seconds,
        "wall_seconds": time.monotonic() - started,
    }
    # Write then rename, so that a launcher never reads half a report.
    path = report_path(output_dir, index)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)
    return report


def _free_ports(count: int) -> list[int]:
    """Ports the kernel reports free now; another process may still take one before a worker binds it."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))  # all bound at once, so the ports are distinct
        return [s.getsockname()[1] for s in sockets]


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _kill(process: subprocess.Popen) -> None:
    """Kill the worker's whole process group (it runs in its own session) and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class _PortClash(RuntimeError):
    pass


def _run_workers(spec_path: Path, n: int, output_dir: Path, timeout_s: float) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CONFIG", None)
    # The workers import this package even when it is not installed (e.g. run from a checkout).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    logs = [output_dir / "logs" / f"worker-{i}.log" for i in range(n)]
    processes: list[subprocess.Popen] = []
    try:
        for i in range(n):
            with logs[i].open("wb") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "lhc_assets.ml.distributed", "worker", "--spec", str(spec_path),
                     "--index", str(i), "--parent-pid", str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True,  # own process group: killing it takes any child along
                ))
        deadline = time.monotonic() + timeout_s
        while True:
            codes = [p.poll() for p in processes]
            failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                # The earliest failure is the cause; peers fail after it (their collectives are aborted).
                i = min(failed, key=lambda k: (_failure_time(output_dir, k), k))
                tail = _tail(logs[i])
                kind = _PortClash if any(marker in tail for marker in _PORT_CLASH) else RuntimeError
                raise kind(f"worker {i} exited with code {codes[i]}; last lines of {logs[i]}:\n{tail}")
            if all(code == 0 for code in codes):
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- worker {i} ({logs[i]}):\n{_tail(logs[i], 15)}" for i in range(n))
                raise RuntimeError(f"distributed training did not finish within {timeout_s:.0f} s\n{tails}")
            time.sleep(0.2)
    finally:
        # Whatever happened (failure, timeout, KeyboardInterrupt): no worker outlives the launcher.
        for process in processes:
            _kill(process)


def train_multi_worker(
    dataset: str | Path,
    inputs: str,
    model: str,
    workers: int = 2,
    *,
    epochs: int = 1,
    batch_size: int = 128,
    seed: int | None = 0,
    output_dir: str | Path,
    model_kwargs: dict[str, Any] | None = None,
    steps_per_epoch: int | None = None,
    timeout_s: float = 600.0,
    port_attempts: int = 3,
) -> dict[str, Any]:
    """Train ``model`` with ``workers`` local worker processes on 127.0.0.1; blocks until they finish.

    Returns ``{"workers": [report per worker, by index], "model_path": chief's .keras file, "history":
    {"loss": [per epoch], "accuracy": [...]}}`` (metrics over all workers' batches). Raises RuntimeError
    with the failing worker's log tail if a worker fails or the run exceeds ``timeout_s``; all workers are
    killed in either case. A worker that could not bind its port (taken since it was picked) makes the run
    start again on new ports, up to ``port_attempts`` times. The spec, the reports, the worker logs
    (``logs/worker-<i>.log``) and the model are written to ``output_dir``.
    """
    if workers < 1:
        raise ValueError(f"workers must be positive, got {workers}")
    output_dir = Path(output_dir).resolve()
    (output_dir / "logs").mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {
        "dataset": str(Path(dataset).resolve()),
        "inputs": inputs,
        "model": model,
        "model_kwargs": dict(model_kwargs or {}),
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "output_dir": str(output_dir),
    }
    if steps_per_epoch is not None:
        spec["steps_per_epoch"] = steps_per_epoch
    spec_path = output_dir / SPEC_FILE
    for attempt in range(1, port_attempts + 1):
        spec["workers"] = [f"127.0.0.1:{port}" for port in _free_ports(workers)]
        _check_spec(spec)  # fail here, not in N worker processes
        for i in range(workers):
            report_path(output_dir, i).unlink(missing_ok=True)
            _failure_path(output_dir, i).unlink(missing_ok=True)
        spec_path.write_text(json.dumps(spec, indent=2))
        try:
            _run_workers(spec_path, workers, output_dir, timeout_s)
            break
        except _PortClash:
            if attempt == port_attempts:
                raise
    reports = [json.loads(report_path(output_dir, i).read_text()) for i in range(workers)]
    return {"workers": reports, "model_path": reports[0]["model_path"], "history": reports[0]["history"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lhc_assets.ml.distributed", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run one worker of a multi-worker training")
    worker.add_argument("--spec", required=True, type=Path, help="JSON spec shared by all workers")
    worker.add_argument("--index", required=True, type=int, help="this worker's position in spec['workers']")
    worker.add_argument("--parent-pid", type=int, help="exit when this process (the launcher) is gone")
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        _exit_with_parent(args.parent_pid)
    spec = json.loads(args.spec.read_text())
    try:
        report = run_worker(spec, args.index)
    except BaseException:
        # When the failure was, so that the launcher can tell the cause from the peers that failed of it.
        if isinstance(spec, dict) and spec.get("output_dir"):
            with contextlib.suppress(OSError):
                _failure_path(spec["output_dir"], args.index).write_text(repr(time.time()))
        raise
    print(f"worker {report['index']}: {report['steps']} steps, {report['samples']} samples, "
          f"{report['wall_seconds']:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
