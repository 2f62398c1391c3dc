"""Result files and the summaries papers report, one module per concept:

* :mod:`.formats`: the TSV formats (certify, predict, attack), writing rows and reading files back;
* :mod:`.summaries`: certified accuracy, ACR, the results table (:func:`table_from_files`), the
  high-probability accuracy bound, attack summaries;
* :mod:`.norms`: the norms radii are measured in (the :data:`NORMS` registry), l-infinity conversion;
* :mod:`.policy`: tables of policy-smoothing runs (one row per budget);
* :mod:`.render`: markdown, LaTeX and csv with the best values marked;
* :mod:`.integrity`: what a table must say about its files (duplicated rows, unfinished runs,
  missing rows, sequential target-radius runs).

The file promises (atomic writes, sidecars, never writing over results, what kind of result a
file holds) are :mod:`robustcert.files`; their names are re-exported here, as are every name this
package had when it was one module, so ``from robustcert.results import X`` keeps working.
"""
from ..errors import ResultsError
from ..files import (
    ATTACK_COLUMNS, CERTIFY_COLUMNS, POLICY_COLUMNS, PREDICT_COLUMNS, check_derived_output, existing_result_kind,
    header_columns, is_sidecar_record, read_sidecar, result_kind, same_file, write_derived_file,
    write_text_atomically,
)
from .formats import (
    attack_row, certificates_frame, certify_row, format_radius, format_time, is_certify_frame, parse_time,
    predict_row, read_results,
)
from .norms import (
    DEFAULT_NORM, LINF_NOTE, NORMS, Norm, convert_radii, fine_radii, get_norm, input_dimension, linf_radii,
    name_norm_columns, norm_labels, register_norm, result_norm,
)
from .integrity import checked_frame, drop_duplicate_rows, run_mode, run_notes
from .policy import POLICY_TABLE_COLUMNS, is_policy_table, policy_table, read_policy_certificate
from .render import (
    INTEGER_COLUMNS, LATEX_SPECIALS, best_rows, column_direction, comparable_groups, marking_note, render_table,
)
from .summaries import (
    ABSTENTION, ACR, CLEAN_ACCURACY, EMPIRICAL, HIGH_PROBABILITY_BOUNDS, ROWS, attack_line, attack_summary,
    attack_table, average_certified_radius,
    certified_accuracy, default_labels, default_radii, false_certificate_quantile, high_probability_accuracy,
    largest_certified_radius, parse_radii, radius_column, results_table, summary_row, table_from_files,
)

__all__ = [
    "ABSTENTION", "ACR", "ATTACK_COLUMNS", "CERTIFY_COLUMNS", "CLEAN_ACCURACY", "DEFAULT_NORM", "HIGH_PROBABILITY_BOUNDS",
    "INTEGER_COLUMNS", "LATEX_SPECIALS", "LINF_NOTE", "NORMS", "Norm", "POLICY_COLUMNS", "POLICY_TABLE_COLUMNS",
    "PREDICT_COLUMNS", "ROWS", "EMPIRICAL", "ResultsError", "attack_line", "attack_row", "attack_summary",
    "attack_table", "average_certified_radius", "checked_frame", "drop_duplicate_rows", "run_mode", "run_notes",
    "best_rows", "certificates_frame", "certified_accuracy", "certify_row", "check_derived_output",
    "column_direction", "comparable_groups", "convert_radii", "default_labels", "default_radii",
    "existing_result_kind", "false_certificate_quantile", "fine_radii", "format_radius", "format_time",
    "get_norm", "header_columns", "high_probability_accuracy", "input_dimension", "is_certify_frame",
    "is_policy_table", "is_sidecar_record", "largest_certified_radius", "linf_radii", "marking_note",
    "name_norm_columns", "norm_labels", "parse_radii", "parse_time", "policy_table", "predict_row",
    "radius_column", "read_policy_certificate", "read_results", "read_sidecar", "register_norm", "render_table",
    "result_kind", "result_norm", "results_table", "same_file", "summary_row", "table_from_files",
    "write_derived_file", "write_text_atomically",
]
