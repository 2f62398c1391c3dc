"""Choose Lipschitz-variance-margin smoothing's (map, temperature) once per data set, on held-out inputs.

Each (map, temperature) pair k defines its own smoothed classifier g_k = argmax_c E[S_k(z(x + delta))_c].
Choosing k per input from that input's own noise certifies g_k at x and perhaps g_k' at a nearby x'
(input-dependent smoothing; Sukenik et al. 2022): no one classifier is certified. Here the pair is
chosen ONCE, before any certified input is sampled:

    SELECT-LVM(grid, held-out inputs H disjoint from the certified inputs, n0, n, alpha):
        for every h in H: certify h with every pair k of the grid (one set of samples per input,
            noise streams "lvm-select-selection" / "lvm-select-estimation", never the certified
            inputs' streams)
        score(k) = mean over H of radius_k(h) * [g_k correct at h]      (ACR on H)
        return the pair with the largest score (ties: the first in grid order)

Alpha: the choice is a function of H, its labels and its own noise only, all independent of the
certified inputs' samples, so each certificate of the chosen classifier is an ordinary certificate
at level alpha (no union bound, no share of alpha for the selection). It is only as good as H is
representative; that affects radii, never validity.

    selection = select_lvm(load_model("bundled:digits-0.50"), 10, 0.5, "digits", split="train",
                           max_inputs=100, n=1000)
    selection.chosen.label, selection.scores             # e.g. "hardmax", one row per pair
    certify_dataset(selection.smoothed, "digits", "lvm.tsv", n=10_000)   # the sidecar records the choice

CLI: ``robustcert certify --method lvm --maps ... --temperatures ... --lvm-select-on train:100``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..data import CertDataset, load_dataset
from ..errors import InvalidArgumentError, check_count
from ..methods.lipschitz import GRID_MAPS, GRID_TEMPERATURES, LipschitzSmooth
from ..simplex import Candidate

#: The noise streams of the held-out inputs: stage names no certification uses.
SELECTION_STAGE_PREFIX = "lvm-select-"
DEFAULT_HELD_OUT = 100
CRITERION = "ACR on the held-out inputs (mean of radius x correct; ties: first pair in grid order)"


@dataclass
class LvmSelection:
    """What :func:`select_lvm` chose: the pair, the score of every pair, the record for the sidecar,
    and the smoothed classifier with the chosen pair alone."""

    chosen: Candidate
    scores: pd.DataFrame
    record: dict
    smoothed: LipschitzSmooth


def input_fingerprint(x) -> str:
    """A short content hash of one input (sha256 of its float32 bytes): how runs recognise an input
    whatever split or index it is loaded under (an npz file's splits are one set of inputs)."""
    array = np.ascontiguousarray(torch.as_tensor(x).detach().cpu().float().numpy())
    return hashlib.sha256(array.tobytes()).hexdigest()[:16]


def held_out_inputs(dataset: CertDataset, count: int, exclude: Sequence[int] = (),
                    exclude_fingerprints: Sequence[str] = ()) -> tuple[list[int], list[str]]:
    """``count`` inputs of ``dataset`` spread evenly over it, none of index ``exclude`` or content
    ``exclude_fingerprints`` (the certified inputs); further ones replace those left out.
    Returns their indices and fingerprints."""
    count = check_count(count, "held-out inputs")
    excluded, certified = set(int(i) for i in exclude), set(exclude_fingerprints)
    spread = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)).tolist()
    order = spread + sorted(set(range(len(dataset))) - set(spread))
    indices, fingerprints = [], []
    for index in order:
        if index in excluded:
            continue
        fingerprint = input_fingerprint(dataset[index][0])
        if fingerprint in certified:
            continue
        indices.append(index)
        fingerprints.append(fingerprint)
        if len(indices) == count:
            break
    if not indices:
        raise InvalidArgumentError(f"no held-out inputs: every input of {dataset.name} ({dataset.split}) is "
                                   "certified; select on another split (e.g. train)")
    return indices, fingerprints


def select_from_grid(grid: LipschitzSmooth, dataset: CertDataset, indices: Sequence[int], fingerprints: Sequence[str],
                     *, n0: int = 100, n: int = 10_000, alpha: float = 0.001, batch_size: int | str = 1000,
                     seed: int = 0, inputs_per_call: int = 20) -> LvmSelection:
    """SELECT-LVM (module docstring) over the pairs of ``grid`` (a LipschitzSmooth with
    ``per_input_grid=True``) on ``dataset[indices]``; the caller guarantees that these inputs are
    disjoint from the certified ones (:func:`select_lvm` and ``--lvm-select-on`` do)."""
    if not indices:
        raise InvalidArgumentError("select_lvm needs at least one held-out input")
    n0, n, alpha, batch_size = grid.check_certify_args(n0, n, alpha, batch_size)
    seed = grid.resolve_seed(seed)
    batch_size = grid.resolve_batch_size(batch_size, dataset.input_shape)
    radii = np.zeros((len(indices), len(grid.candidates)))
    for start in range(0, len(indices), inputs_per_call):
        group = list(indices[start:start + inputs_per_call])
        items = [dataset[i] for i in group]
        xs = torch.stack([torch.as_tensor(x) for x, _ in items])
        per_input = grid.certify_each_candidate(xs, n0, n, alpha, batch_size, seed, group,
                                                stage_prefix=SELECTION_STAGE_PREFIX)
        for row, ((_, label), certificates) in enumerate(zip(items, per_input)):
            radii[start + row] = [c.radius if c.correct(label) else 0.0 for c in certificates]
    labels = [c.label for c in grid.candidates]
    scores = pd.DataFrame({"classifier": labels, "ACR": radii.mean(axis=0),
                           "certified accuracy at 0": (radii > 0).mean(axis=0)})
    best = int(np.argmax(scores["ACR"].to_numpy()))  # argmax: the first of equal scores
    chosen = grid.candidates[best]
    record = {
        "data": dataset.name, "split": dataset.split, "inputs": len(indices), "indices": [int(i) for i in indices],
        "fingerprints": list(fingerprints),
        "n0": n0, "n": n, "alpha": alpha, "seed": seed,
        "noise_streams": f"{SELECTION_STAGE_PREFIX}selection, {SELECTION_STAGE_PREFIX}estimation",
        "criterion": CRITERION, "scores": {label: round(float(v), 6) for label, v in zip(labels, scores["ACR"])},
        "chosen": chosen.label,
        "alpha_spending": "none: the held-out inputs and their noise are independent of the certified inputs' samples",
    }
    return LvmSelection(chosen, scores, record, grid.with_candidate(chosen, selected_on=record))


def select_lvm(model, num_classes: int, sigma: float, data, *, maps: Sequence[str] = GRID_MAPS,
               temperatures: Sequence[float] = GRID_TEMPERATURES, split: str = "train",
               max_inputs: int = DEFAULT_HELD_OUT, exclude: Sequence[int] = (), n0: int = 100, n: int = 10_000,
               alpha: float = 0.001, batch_size: int | str = 1000, seed: int = 0, **lvm_options) -> LvmSelection:
    """Choose one (map, temperature) pair of a grid on held-out inputs (module docstring).

    Args:
        model: as for :class:`LipschitzSmooth`.
        num_classes: as for :class:`LipschitzSmooth`.
        sigma: as for :class:`LipschitzSmooth`.
        data: a dataset from :func:`robustcert.load_dataset`, or its specification loaded with ``split``
            (default the train split: disjoint from a test-split certification).
        maps: the grid's maps (default: softmax and sparsemax, and hardmax).
        temperatures: the grid's temperatures (default: 0.25..2 for softmax and sparsemax).
        max_inputs: held-out inputs, spread evenly over the split (minus ``exclude``).
        exclude: indices of ``data`` that are certified: give them when selecting on the split you
            certify, so that the held-out inputs are disjoint from them. :func:`certify_dataset`
            refuses to certify an input (by content) that the choice was made on.
        n0: of the held-out certifications (use the values of the run; so for the next four).
        n: of the held-out certifications.
        alpha: of the held-out certifications.
        batch_size: of the held-out certifications.
        seed: of the held-out certifications.
        lvm_options: the other LipschitzSmooth options (lipschitz, formulas, bound, selection,
            device, input_shape, precision, channels_last, compile), kept by the chosen classifier.

    Returns:
        :class:`LvmSelection`; ``.smoothed`` is the LipschitzSmooth with the chosen pair, whose
        ``settings()`` (hence every run's sidecar) record the held-out inputs, scores and choice.
    """
    dataset = data if isinstance(data, CertDataset) else load_dataset(str(data), split)
    grid = LipschitzSmooth(model, num_classes, sigma, maps=maps, temperatures=temperatures, per_input_grid=True,
                           **lvm_options)
    indices, fingerprints = held_out_inputs(dataset, max_inputs, exclude)
    return select_from_grid(grid, dataset, indices, fingerprints, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                            seed=seed)


def parse_select_spec(spec: str) -> tuple[str, int]:
    """``--lvm-select-on SPLIT[:COUNT]`` -> (split, count); COUNT defaults to 100."""
    split, _, count = str(spec).partition(":")
    split = split.strip()
    if not split:
        raise InvalidArgumentError(f"--lvm-select-on must be SPLIT[:COUNT], e.g. train:100, got {spec!r}")
    try:
        number = int(count) if count.strip() else DEFAULT_HELD_OUT
    except ValueError:
        raise InvalidArgumentError(f"--lvm-select-on must be SPLIT[:COUNT] with a whole COUNT, got {spec!r}") from None
    return split, check_count(number, "the held-out inputs of --lvm-select-on")


def select_on_spec(grid: LipschitzSmooth, spec: str, certified: CertDataset, certified_indices: Sequence[int], *,
                   n0: int = 100, n: int = 10_000, alpha: float = 0.001, batch_size: int | str = 1000,
                   seed: int = 0) -> LvmSelection:
    """``--lvm-select-on SPLIT[:COUNT]``: COUNT held-out inputs of the split SPLIT of the run's data,
    none of them (by content) a certified input."""
    split, count = parse_select_spec(spec)
    dataset = certified if split == certified.split else load_dataset(certified.name, split)
    certified_fingerprints = [input_fingerprint(certified[i][0]) for i in certified_indices]
    indices, fingerprints = held_out_inputs(dataset, count, exclude_fingerprints=certified_fingerprints)
    return select_from_grid(grid, dataset, indices, fingerprints, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                            seed=seed)


def check_held_out(smoothed, dataset: CertDataset, indices: Sequence[int]) -> None:
    """A run certifies no input its classifier was selected on (compared by content)."""
    record = getattr(smoothed, "selected_on", None)
    if not isinstance(record, dict) or not record.get("fingerprints"):
        return
    held_out = set(record["fingerprints"])
    for index in indices:
        if input_fingerprint(dataset[index][0]) in held_out:
            raise InvalidArgumentError(
                f"input {index} of {dataset.name} ({dataset.split}) was one of the held-out inputs that selected the "
                "LVM classifier; certify inputs disjoint from them (select on another split, or exclude these)")
