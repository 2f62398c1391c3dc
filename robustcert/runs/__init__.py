"""Whole-dataset runs and what they write: the layer between the command line and the methods.

* :mod:`.dataset`: :func:`certify_dataset` / :func:`predict_dataset` (TSV + sidecar, resume,
  progress, sharding) — what ``robustcert certify`` / ``predict`` call;
* :mod:`.build`: a smoothed classifier from specifications (``--model``, ``--method``, ...);
* :mod:`.lvm_select`: :func:`select_lvm`, LVM's (map, temperature) chosen once on held-out inputs;
* :mod:`.files`: the TSV row writer, sidecars, resume checks, atomic writes;
* :mod:`.provenance`: command, versions, device, model and data records;
* :mod:`.sharded`: torchrun / torch.distributed sharding and the merge of part files;
* :mod:`.policy`: a policy-smoothing run written to a file (``robustcert certify-policy``);
* :mod:`.demo`, :mod:`.bench`: the README's main job and the benchmark.

Dependencies go one way: cli -> runs -> methods -> engine -> stats/radius; nothing here imports
click.
"""
from .build import build_smoothed
from .dataset import certify_dataset, predict_dataset
from .lvm_select import select_lvm

__all__ = ["build_smoothed", "certify_dataset", "predict_dataset", "select_lvm"]
