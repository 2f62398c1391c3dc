"""Whole-dataset runs: certify or predict every SKIP-th input of a dataset, with files or in memory.

    from robustcert import Smooth, certify_dataset, load_model
    smoothed = Smooth(load_model("bundled:digits-0.25"), num_classes=10, sigma=0.25)
    frame = certify_dataset(smoothed, "digits", "out.tsv", n=10_000, max_inputs=20)
    frame[["idx", "label", "predict", "radius", "correct", "p_lower", "samples_used"]]

With ``out``, a run writes exactly what ``robustcert certify`` writes for the same parameters
(it *is* what that command calls): the reference TSV, one flushed row per input, and the JSON
sidecar ``out.json`` (command, parameters with the alpha spending, model and data, device,
versions, engine report, samples used). ``resume=True`` continues an interrupted run; under
torchrun the inputs are sharded across processes (:mod:`robustcert.runs.sharded`). Without
``out`` nothing is written. Either way the certificates come back as a DataFrame.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from ..data import CertDataset, load_dataset
from ..engine import configure_cpu, inputs_per_call
from ..errors import InvalidArgumentError, ShapeError, check_count, note_interruption
from ..models.preprocess import Preprocessing
from ..models.provenance import recorded
from ..results import ATTACK_COLUMNS, CERTIFY_COLUMNS, PREDICT_COLUMNS, certify_row, predict_row, read_results
from . import sharded
from ..files import RowWriter, check_output, finish_last_run, output_lock, previous_runs, write_sidecar
from .lvm_select import check_held_out
from .progress import progress_bar
from .provenance import describe_models, python_command, run_record

#: Per-input fields of the returned frame beyond the TSV's columns.
CERTIFY_EXTRAS = ("p_lower", "samples_used")
PREDICT_EXTRAS = ("p_value", "samples_used")
ATTACK_EXTRAS = ("p_value_clean", "p_value_adv", "samples_used")
#: The TSV columns and extra frame fields of each kind of dataset run.
RUN_COLUMNS = {"certify": (CERTIFY_COLUMNS, CERTIFY_EXTRAS), "predict": (PREDICT_COLUMNS, PREDICT_EXTRAS),
               "attack": (ATTACK_COLUMNS, ATTACK_EXTRAS)}


def selected_indices(length: int, skip: int, max_inputs: int) -> list[int]:
    """Every ``skip``-th index of a dataset of ``length`` inputs, at most ``max_inputs`` (-1: all)."""
    skip = check_count(skip, "skip")
    if isinstance(max_inputs, bool) or not isinstance(max_inputs, int) or max_inputs == 0 or max_inputs < -1:
        raise InvalidArgumentError(f"max_inputs must be >= 1, or -1 for all inputs, got {max_inputs!r}")
    indices = list(range(0, length, skip))
    return indices if max_inputs < 0 else indices[:max_inputs]


def as_dataset(data, split: str = "test", preprocessing=None) -> CertDataset:
    """A dataset from anything :func:`robustcert.load_dataset` returns, or a specification string
    (``imagefolder:`` images at the resolution of ``preprocessing``, the model's, when given)."""
    if isinstance(data, CertDataset):
        return data
    if isinstance(data, (str, Path)):
        return load_dataset(str(data), split, preprocessing)
    raise InvalidArgumentError(f"data must be a dataset from load_dataset or a specification such as 'digits', "
                               f"got {type(data).__name__}")


def model_preprocessing(smoothed):
    """The preprocessing a pretrained (zoo) base model was loaded with, None for any other model."""
    record = recorded(smoothed.base_models()["model"]).get("preprocessing")
    return None if record is None else Preprocessing.from_record(record)


def check_fits(smoothed, dataset: CertDataset) -> None:
    """The dataset's labels must be classes of the smoothed classifier."""
    if dataset.num_classes > smoothed.num_classes:
        raise ShapeError(f"class-count mismatch: the dataset {dataset.name} has {dataset.num_classes} classes, "
                         f"the smoothed classifier {smoothed.num_classes}")


@dataclass
class DatasetRun:
    """One run over a dataset: what to compute per group of inputs, and where rows go."""

    kind: str                       # "certify", "predict" or "attack" (RUN_COLUMNS)
    columns: tuple[str, ...]
    extras: tuple[str, ...]
    smoothed: object
    dataset: CertDataset
    indices: list[int]
    per_call: int                   # inputs per engine call (several when their samples fit a batch)
    samples_per_input: int
    results_for: Callable           # (xs, indices, labels) -> list of (TSV line, frame row)
    progress: bool

    def groups(self, todo: list[int]) -> list[list[int]]:
        return [todo[start:start + self.per_call] for start in range(0, len(todo), self.per_call)]

    def work(self, groups: list[list[int]], writer: RowWriter | None, show_progress: bool, initial: int = 0,
             frame_rows: list | None = None) -> None:
        """Compute each group's results, write one flushed row per input, show progress."""
        started, samples_done = time.perf_counter(), 0
        total = initial + sum(map(len, groups))
        with progress_bar(total, self.progress and show_progress, initial=initial, what=self.kind) as bar:
            for group in groups:
                items = [self.dataset[i] for i in group]
                xs = torch.stack([torch.as_tensor(x) for x, _ in items])
                for line, row in self.results_for(xs, group, [label for _, label in items]):
                    if writer is not None:
                        writer.write(line)
                    if frame_rows is not None:
                        frame_rows.append(row)
                    samples_done += row.get("samples_used", self.samples_per_input)  # sequential: what was drawn
                bar.set_postfix(samples_per_s=f"{samples_done / max(time.perf_counter() - started, 1e-9):.3g}",
                                refresh=False)
                bar.update(len(group))


def _execute(run: DatasetRun, out: Path | None, resume: bool, parameters: dict, model: dict, command: str,
             cpu: dict) -> pd.DataFrame:
    """Run in memory, to a file, or as one rank of a sharded run; returns the frame."""
    frame_rows: list[dict] = []

    def samples() -> list[int]:
        return [row["samples_used"] for row in frame_rows]

    if out is None:
        run.work(run.groups(run.indices), None, True, frame_rows=frame_rows)
        return _frame(run, frame_rows, None)
    record = run_record(run.kind, run.smoothed, run.dataset, parameters, model, run.smoothed.device, command)
    record["data"].update(inputs=len(run.dataset), selected=len(run.indices))  # tables check the rows against it
    if cpu:
        record["runs"][-1]["cpu"] = cpu
    if sharded.current() is not None:
        try:
            sharded.run_sharded(out, run.columns, record, resume, run.indices, run.per_call,
                                lambda groups, writer, show: run.work(groups, writer, show, frame_rows=frame_rows),
                                run.smoothed.engine_report)
        except BaseException as exc:
            _finish(out, run, sharded.gather_after_run(samples()), ending=exc)
            raise
        _finish(out, run, sharded.gather_after_run(samples()))
        return _frame(run, frame_rows, out if sharded.current().rank == 0 else None)
    sharded.fold_interrupted_parts(out, run.columns, resume)
    if resume:
        previous_runs(out, record)  # refuse a mismatched resume before touching the TSV
    writer = RowWriter(out, run.columns, resume)
    todo = [i for i in run.indices if i not in writer.done]
    write_sidecar(out, record, resume)
    try:
        run.work(run.groups(todo), writer, True, initial=len(run.indices) - len(todo), frame_rows=frame_rows)
    except BaseException as exc:
        writer.discard_if_unused()
        _finish(out, run, samples(), ending=exc)
        rows = len(writer.done) + writer.rows_written
        note_interruption(exc, f"{rows} of {len(run.indices)} rows are in {out} ({writer.rows_written} from this run); "
                               f"--resume continues" if out.exists() else "no row was written: nothing is left")
        raise
    finally:
        writer.close()
    _finish(out, run, samples())
    return _frame(run, frame_rows, out)


def _finish(out: Path, run: DatasetRun, samples: list[int] | None, ending: BaseException | None = None) -> None:
    """The sidecar's end of run: the engine report, samples used, and how and when it ended
    (:func:`robustcert.runs.files.finish_last_run`)."""
    fields = {"engine": run.smoothed.engine_report()}
    if samples:
        fields["samples_used"] = {"inputs": len(samples), "total": int(sum(samples)),
                                  "mean_per_input": sum(samples) / len(samples), "max_per_input": max(samples)}
    if sharded.current() is None or sharded.current().rank == 0:
        finish_last_run(out, ending, **fields)


def _frame(run: DatasetRun, rows: list[dict], out: Path | None) -> pd.DataFrame:
    """This call's rows (exact radii and the extra fields), with the file's other rows (earlier runs,
    other ranks; radii as written, extra fields missing), sorted by idx."""
    frame = pd.DataFrame(rows, columns=[*run.columns, *run.extras])
    if out is not None and Path(out).is_file():
        written = read_results(out)
        earlier = written[~written["idx"].isin(frame["idx"])]
        if len(earlier):
            frame = pd.concat([frame, earlier.reindex(columns=frame.columns)], ignore_index=True) if len(frame) \
                else earlier.reindex(columns=frame.columns)
    return frame.sort_values("idx", kind="stable").reset_index(drop=True)


def _start(smoothed, data, out, split, resume, threads, distributed, kind, hold: contextlib.ExitStack):
    """What every dataset run does first: the dataset, the output's lock (held in ``hold`` until the
    run ends) and check, CPU settings, the process group."""
    dataset = as_dataset(data, split, model_preprocessing(smoothed))
    check_fits(smoothed, dataset)
    out = None if out is None else Path(out)
    if out is not None and sharded.is_first_rank(bool(distributed)):
        hold.enter_context(output_lock(out))  # one writer: a second run on this file is refused
        check_output(out, resume, kind)  # before anything slow: never touch existing results
    cpu = configure_cpu(threads) if smoothed.device.type == "cpu" else {}
    joined = sharded.current() is None and sharded.requested(bool(distributed))
    if joined:
        if out is None:
            raise InvalidArgumentError("a distributed run writes its rows to a file: give out")
        sharded.start(True, str(smoothed.device))
    return dataset, out, cpu, joined


def _run(kind: str, smoothed, data, out, *, samples_per_input: int, batch_size, seed, skip: int, max_inputs: int,
         resume: bool, progress: bool, split: str, threads, distributed, command, parameters: dict, options: dict,
         compute: Callable, per_call: Callable[[int], int] | None = None) -> pd.DataFrame:
    """The part of certify_dataset and predict_dataset that does not depend on the kind of run.

    ``compute(batch, seed)`` returns the ``results_for`` function of the run (see DatasetRun);
    ``parameters`` are the kind's own leading run parameters, ``options`` its method options
    (recorded after the method's settings); ``per_call(batch)`` the inputs per call (default:
    :func:`robustcert.engine.inputs_per_call` of ``samples_per_input``).
    """
    seed = smoothed.resolve_seed(seed)
    threads_before = torch.get_num_threads()
    hold = contextlib.ExitStack()
    try:
        dataset, out, cpu, joined = _start(smoothed, data, out, split, resume, threads, distributed, kind, hold)
    except BaseException:
        hold.close()
        raise
    try:
        indices = selected_indices(len(dataset), skip, max_inputs)
        check_held_out(smoothed, dataset, indices)  # an LVM classifier chosen on held-out inputs
        batch = run_batch_size(smoothed, batch_size, dataset.input_shape)
        model, model_parameters = describe_models(smoothed)
        parameters = {**parameters, "batch": batch_size, "seed": seed, "skip": skip, "max": max_inputs,
                      "split": dataset.split, "method": smoothed.method, **smoothed.settings(), **options,
                      **model_parameters}
        if kind == "certify":
            parameters["alpha_spending"] = smoothed.alpha_spending(parameters["alpha"], **options)
        if smoothed.precision != "fp32":
            parameters["precision"] = smoothed.precision  # a resumed run must use the same base classifier
        columns, extras = RUN_COLUMNS[kind]
        calls = inputs_per_call(samples_per_input, batch) if per_call is None else per_call(batch)
        run = DatasetRun(kind, columns, extras, smoothed, dataset, indices, calls, samples_per_input,
                         compute(batch, seed), progress)
        return _execute(run, out, resume, parameters, model, command or python_command(), cpu)
    finally:
        torch.set_num_threads(threads_before)
        if joined:
            sharded.stop()
        hold.close()


def run_batch_size(smoothed, batch_size, input_shape) -> int:
    """The batch of a run: ``batch_size``, or for ``"auto"`` the smoothed classifier's choice; in a
    sharded run rank 0 chooses and every rank uses its choice (the probes of different processes
    may differ, and the batch decides which samples each draw holds)."""
    world = sharded.current()
    if batch_size != "auto" or world is None:
        return smoothed.resolve_batch_size(batch_size, input_shape)
    return world.broadcast(smoothed.resolve_batch_size(batch_size, input_shape) if world.rank == 0 else None)


def certify_dataset(smoothed, data, out: str | Path | None = None, *, n0: int = 100, n: int = 100_000,
                    alpha: float = 0.001, batch_size: int | str = 1000, seed: int | None = 0, skip: int = 1,
                    max_inputs: int = -1, resume: bool = False, progress: bool = True, split: str = "test",
                    threads: int | None = None, distributed: bool | None = None, command: str | None = None,
                    **method_options) -> pd.DataFrame:
    """CERTIFY every ``skip``-th input of a dataset (at most ``max_inputs``; -1: all).

    Args:
        smoothed: a smoothed classifier (Smooth, SequentialSmooth, DualSmooth, LipschitzSmooth,
            AblationSmooth, ...).
        data: a dataset from :func:`robustcert.load_dataset`, or its specification (``"digits"``,
            ``"npz:PATH"``, ...) loaded with ``split``.
        out: the certify TSV to write (with the sidecar ``out.json``), or None for no files.
        n0: as for ``certify_batch``.
        n: as for ``certify_batch``.
        alpha: as for ``certify_batch``.
        batch_size: as for ``certify_batch`` (``batch_size="auto"`` is resolved once, before sampling).
        seed: as for ``certify_batch``. Each input is seeded by (seed, its dataset index), so a
            resumed or sharded run certifies it with the same samples.
        resume: continue an interrupted run of ``out`` (same parameters, model and data).
        progress: a progress bar on stderr (when it is a terminal).
        threads: torch threads on CPU for the run (None: one when the load average shows other
            work, else one per core); restored afterwards. The CPU allocator is tuned (process-wide).
        distributed: shard across torch.distributed ranks (default: when launched by torchrun).
        command: the command recorded in the sidecar (default: this Python process's arguments).
        method_options: passed to ``certify_batch``, e.g. ``sequential=True, target_radius=0.5``.

    Returns:
        A DataFrame, one row per input: ``idx label predict radius correct time`` (the TSV's
        columns; radius exact, abstention = predict -1 and radius 0), ``p_lower`` and
        ``samples_used``. Rows of ``out`` written by an earlier (resumed) run are included with
        their radius as written and no p_lower.
    """
    n0, n, alpha, batch_size = smoothed.check_certify_args(n0, n, alpha, batch_size)

    def compute(batch, seed):
        def results_for(xs, batch_indices, labels):
            certificates = smoothed.certify_batch(xs, n0, n, alpha, batch, seed, batch_indices, **method_options)
            return [(certify_row(c.index, y, c.prediction, c.radius, c.time),
                     {"idx": c.index, "label": y, "predict": c.prediction, "radius": c.radius,
                      "correct": int(c.correct(y)), "time": c.time, "p_lower": c.p_lower,
                      "samples_used": c.samples_used})
                    for c, y in zip(certificates, labels)]
        return results_for

    return _run("certify", smoothed, data, out, samples_per_input=n0 + n, batch_size=batch_size, seed=seed,
                skip=skip, max_inputs=max_inputs, resume=resume, progress=progress, split=split, threads=threads,
                distributed=distributed, command=command, parameters={"sigma": smoothed.sigma, "n0": n0, "n": n,
                                                                       "alpha": alpha},
                options=method_options, compute=compute,
                per_call=lambda batch: smoothed.certify_inputs_per_call(n0, n, batch, **method_options))


def predict_dataset(smoothed, data, out: str | Path | None = None, *, n: int = 100_000, alpha: float = 0.001,
                    batch_size: int | str = 1000, seed: int | None = 0, skip: int = 1, max_inputs: int = -1,
                    resume: bool = False, progress: bool = True, split: str = "test", threads: int | None = None,
                    distributed: bool | None = None, command: str | None = None) -> pd.DataFrame:
    """PREDICT (may abstain) at every ``skip``-th input of a dataset; see :func:`certify_dataset`.

    Returns a DataFrame: ``idx label predict correct time`` (the predict TSV's columns),
    ``p_value`` and ``samples_used``.
    """
    _, n, alpha, batch_size = smoothed.check_certify_args(1, n, alpha, batch_size)

    def compute(batch, seed):
        def results_for(xs, batch_indices, labels):
            predictions = smoothed.predict_batch(xs, n, alpha, batch, seed, batch_indices)
            return [(predict_row(p.index, y, p.prediction, p.time),
                     {"idx": p.index, "label": y, "predict": p.prediction, "correct": int(p.correct(y)),
                      "time": p.time, "p_value": p.p_value, "samples_used": p.samples_used})
                    for p, y in zip(predictions, labels)]
        return results_for

    return _run("predict", smoothed, data, out, samples_per_input=n, batch_size=batch_size, seed=seed, skip=skip,
                max_inputs=max_inputs, resume=resume, progress=progress, split=split, threads=threads,
                distributed=distributed, command=command, parameters={"sigma": smoothed.sigma, "n": n, "alpha": alpha},
                options={}, compute=compute)
