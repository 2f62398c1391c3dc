"""Result tables: numbers equal a hand computation, and the published files reproduce their README.

tests/data/cohen2019 is a copy of the per-image result files Cohen et al. (2019) published with
locuslab/smoothing (data/), with the README that lists the certified accuracies they give.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from robustcert.cli import main
from robustcert.results import (
    ACR, ABSTENTION, CLEAN_ACCURACY, ROWS, ResultsError, best_rows, certificates_frame, certified_accuracy,
    default_labels, default_radii, parse_radii, parse_time, read_results, render_table, results_table,
    table_from_files,
)

REFERENCE = Path(__file__).resolve().parent / "data" / "cohen2019"

# A certify file small enough to count by hand: 8 rows, 2 abstentions, 1 wrong certified row,
# radii on the table's grid points (inclusive comparison matters).
HAND_TSV = """idx\tlabel\tpredict\tradius\tcorrect\ttime
0\t3\t3\t0.5\t1\t0:00:01.500000
1\t1\t1\t0.25\t1\t0:00:01.000000
2\t4\t-1\t0.0\t0\t0:00:01.000000
3\t2\t7\t0.9\t0\t0:00:02.000000
4\t0\t0\t1.0\t1\t0:00:00.500000
5\t9\t9\t0.1\t1\t0:00:01.000000
6\t5\t-1\t0.0\t0\t0:00:01.000000
7\t6\t6\t0.75\t1\t0:01:00.000000
"""
# by hand, over all 8 rows (correct and radius >= r):
#   r=0: rows 0,1,4,5,7 -> 5/8;  r=0.25: 0,1,4,7 -> 4/8;  r=0.5: 0,4,7 -> 3/8;
#   r=0.75: 4,7 -> 2/8;  r=1.0: 4 -> 1/8;  r=1.25: none -> 0
HAND_ACCURACY = {0.0: 5 / 8, 0.25: 4 / 8, 0.5: 3 / 8, 0.75: 2 / 8, 1.0: 1 / 8, 1.25: 0.0}
HAND_ACR = (0.5 + 0.25 + 1.0 + 0.1 + 0.75) / 8  # row 3 is wrong: its 0.9 does not count
HAND_ABSTENTION = 2 / 8

PREDICT_TSV = """idx\tlabel\tpredict\tcorrect\ttime
0\t1\t1\t1\t0.5
1\t2\t-1\t0\t0.5
2\t3\t3\t1\t0.5
3\t4\t0\t0\t0.5
"""


@pytest.fixture
def hand_file(tmp_path):
    path = tmp_path / "hand.tsv"
    path.write_text(HAND_TSV)
    return path


@pytest.fixture
def predict_file(tmp_path):
    path = tmp_path / "pred.tsv"
    path.write_text(PREDICT_TSV)
    return path


def test_table_equals_hand_computation(hand_file):
    table = table_from_files([hand_file], radii=list(HAND_ACCURACY))
    row = table.iloc[0]
    for radius, expected in HAND_ACCURACY.items():
        assert row[f"r={radius:g}"] == pytest.approx(expected)
    assert row[CLEAN_ACCURACY] == pytest.approx(5 / 8)
    assert row[ABSTENTION] == pytest.approx(HAND_ABSTENTION)
    assert row[ACR] == pytest.approx(HAND_ACR)
    assert row[ROWS] == 8
    frame = read_results(hand_file)
    assert frame["time"].tolist() == pytest.approx([1.5, 1, 1, 2, 0.5, 1, 1, 60])


def test_table_command_prints_the_hand_computed_numbers(hand_file):
    result = CliRunner().invoke(main, ["table", str(hand_file), "--radii", "0:1.25:0.25", "--format", "csv",
                                       "--no-mark", "--decimals", "4"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "file,r=0,r=0.25,r=0.5,r=0.75,r=1,r=1.25,clean accuracy,abstention,ACR,rows"
    cells = lines[1].split(",")
    assert cells[0] == "hand"
    expected = [*HAND_ACCURACY.values(), 5 / 8, HAND_ABSTENTION, HAND_ACR]
    assert [float(c) for c in cells[1:-1]] == pytest.approx([round(v, 4) for v in expected])
    assert cells[-1] == "8"


def test_predict_file_gives_clean_accuracy_and_no_certified_columns(predict_file, hand_file):
    table = table_from_files([hand_file, predict_file], radii=[0, 0.5])
    predicted = table.loc["pred"]
    assert predicted[CLEAN_ACCURACY] == pytest.approx(0.5)
    assert predicted[ABSTENTION] == pytest.approx(0.25)
    assert math.isnan(predicted["r=0"]) and math.isnan(predicted[ACR])
    markdown = render_table(table)
    assert "| pred | - | - | 0.500 | 0.250 | - | 4 |" in markdown


def test_empty_file_has_rows_zero_and_no_rates(tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_text(HAND_TSV.splitlines()[0] + "\n")
    row = table_from_files([path], radii=[0, 1]).iloc[0]
    assert row[ROWS] == 0
    assert all(math.isnan(row[c]) for c in ["r=0", "r=1", CLEAN_ACCURACY, ABSTENTION, ACR])


def test_certified_accuracy_is_inclusive_and_counts_abstentions_as_wrong():
    frame = pd.DataFrame({"correct": [1, 1, 0, 0], "radius": [0.5, 0.25, 0.0, 0.75], "predict": [1, 1, -1, 2]})
    assert certified_accuracy(frame, [0.25, 0.5, 0.5000001]).tolist() == [0.5, 0.25, 0.0]


def read_readme_tables():
    """(file description, radii, values) for every row of the reference README's tables."""
    rows, radii = [], None
    for line in (REFERENCE / "README.md").read_text().splitlines():
        if line.startswith("| file"):
            radii = [0.0] + [float(c) for c in line.strip("|").split("|")[2:]]
        match = re.match(r"\| (\w+) (noise_[\d.]+) (sigma_[\d.]+) \|(.*)\|$", line)
        if match:
            dataset, noise, sigma, values = match.groups()
            path, = (REFERENCE / "certify" / dataset).glob(f"*/{noise}/test/{sigma}")
            rows.append((path, radii, [float(v) for v in values.split("|")]))
    return rows


def test_published_files_reproduce_the_reference_readme():
    rows = read_readme_tables()
    assert len(rows) == 7  # 4 CIFAR-10 and 3 ImageNet files are listed
    for path, radii, expected in rows:
        table = table_from_files([path], radii=radii)
        got = [table.iloc[0][f"r={r:g}"] for r in radii]
        assert [f"{g:.2f}" for g in got] == [f"{e:.2f}" for e in expected], path
        assert table.iloc[0][ROWS] == (427 if "imagenet/resnet50/noise_0.25" in str(path) else 500)


def test_table_command_on_published_files(tmp_path):
    rows = read_readme_tables()
    checked = 0
    for dataset in ("cifar10", "imagenet"):  # one command per README table (each has its radius grid)
        group = [(p, r, e) for p, r, e in rows if f"/{dataset}/" in str(p)]
        radii = group[0][1]
        out = tmp_path / f"{dataset}.csv"
        result = CliRunner().invoke(main, ["table", *[str(p) for p, _, _ in group], "--radii",
                                           ",".join(map(str, radii)), "--format", "csv", "--decimals", "2",
                                           "--out", str(out)])
        assert result.exit_code == 0, result.output
        parsed = pd.read_csv(out, index_col=0)  # csv is data by default: numbers, no marks
        assert all(pd.api.types.is_numeric_dtype(dtype) for dtype in parsed.dtypes)
        for (path, _, expected), (_, line) in zip(group, parsed.iterrows()):
            assert line[[f"r={r:g}" for r in radii]].tolist() == pytest.approx(expected), path
            checked += 1
        assert result.stdout == f"wrote {out}\n"
    assert checked == 7


def test_reference_time_columns_are_read_as_seconds():
    cifar = read_results(REFERENCE / "certify/cifar10/resnet110/noise_0.25/test/sigma_0.25")  # plain seconds
    imagenet = read_results(REFERENCE / "certify/imagenet/resnet50/noise_0.25/test/sigma_0.25")  # timedelta
    assert imagenet["time"].iloc[0] == pytest.approx(151.238689)  # 0:02:31.238689
    assert cifar["time"].dtype == float and (cifar["time"] > 0).all()
    assert parse_time("1 day, 0:00:01.5") == pytest.approx(86401.5)


def test_best_value_per_column_is_marked_in_every_format(hand_file, tmp_path):
    worse = tmp_path / "worse.tsv"
    worse.write_text(HAND_TSV.replace("0\t3\t3\t0.5\t1", "0\t3\t-1\t0.0\t0"))  # one more abstention
    table = table_from_files([hand_file, worse], radii=[0, 0.25, 2.0])
    best = best_rows(table)
    assert best["r=0"] == {"hand"} and best[ACR] == {"hand"}
    assert best[ABSTENTION] == {"hand"}  # lower is better
    assert best["r=2"] == set()  # both 0: nothing to mark
    assert best[ROWS] == set()
    markdown = render_table(table)
    assert "| hand | **0.625** | **0.500** | 0.000 |" in markdown
    assert "| worse | 0.500 | 0.375 | 0.000 |" in markdown
    latex = render_table(table, "latex")
    assert r"\textbf{0.625}" in latex and r"\toprule" in latex and r"$r{=}0.25$" in latex
    csv = render_table(table, "csv", mark_best=True)  # marks in csv only on request, and no comment line
    assert "hand,0.625*,0.500*" in csv and "#" not in csv
    assert "*" not in render_table(table, "csv") and "*" not in render_table(table, "csv", mark_best=False)
    ties = results_table({"a": read_results(hand_file), "b": read_results(hand_file)}, [0])
    assert best_rows(ties)["r=0"] == set()  # all equal: no best


def test_latex_escapes_labels(hand_file):
    latex = render_table(table_from_files([hand_file], [0], labels=["noise_0.25 & 50%"]), "latex")
    assert r"noise\_0.25 \& 50\%" in latex


@pytest.mark.parametrize("text", ["", "a,b", "0,-0.5", "0,nan", "0:1:0", "1:0:0.25", "0,inf"])
def test_bad_radius_lists_are_refused(text):
    with pytest.raises(ResultsError, match="bad radius list"):
        parse_radii(text)


def test_radius_grids():
    assert parse_radii("0:1.5:0.25") == [0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    assert parse_radii("0, 0.5,1") == [0, 0.5, 1]
    assert default_radii(1.5) == [0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]  # the reference CIFAR-10 grid
    assert default_radii(3.81) == [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5]  # not 4: its column would be 0 for every file
    assert default_radii(0.0) == [0]


def test_default_labels_are_the_shortest_distinct_path_ends():
    assert default_labels(["a/x/sigma_0.5", "a/y/sigma_0.5", "b/sigma_0.25.tsv"]) == \
        ["x/sigma_0.5", "y/sigma_0.5", "b/sigma_0.25"]
    assert default_labels(["runs/digits-0.25.tsv"]) == ["digits-0.25"]


@pytest.mark.parametrize("content,message", [
    (None, "not found"),
    (b"\x80\x81\x00binary", "not a text file"),
    (b"", "empty"),
    (b"a\tb\n1\t2\n", "not a certify/predict TSV"),
    (b"idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\tabc\t1\t0.1\n", "malformed row"),
])
def test_unreadable_result_files_raise_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ResultsError, match=message) as info:
        read_results(path)
    assert "\n" not in str(info.value)


def test_certificates_frame_matches_tsv_conventions():
    from robustcert import Certificate

    def cert(prediction, radius, index):
        return Certificate(prediction, radius, 0.9, [], 10, 100, 0.001, 0.25, "cohen", 0, index)

    frame = certificates_frame([cert(3, 0.4, 7), cert(-1, 0.0, 8), cert(2, 0.3, 9)], [3, 1, 5])
    assert frame.columns.tolist() == ["idx", "label", "predict", "radius", "correct", "time"]
    assert frame["correct"].tolist() == [1, 0, 0] and frame["idx"].tolist() == [7, 8, 9]
    assert certified_accuracy(frame, [0.0, 0.4]).tolist() == pytest.approx([1 / 3, 1 / 3])
    assert np.isclose(results_table({"x": frame}, [0]).iloc[0][ACR], 0.4 / 3)


def _false_certificate_rate_exceeded(deficit: float, rows: int, a: float) -> float:
    """Exact P(F > rows * deficit) for F ~ Binomial(rows, a): the chance that a high-probability
    accuracy acc - deficit over-states the accuracy (1e-9 absorbs the rounding of k/m * m)."""
    from scipy.stats import binom

    return float(binom.sf(math.floor(rows * deficit + 1e-9), rows, a))


HIGH_PROBABILITY_ROWS = sorted({int(round(10 ** (e / 8))) for e in range(16, 49)})  # 100 .. 10^6, 33 values


@pytest.mark.parametrize("a, rho", [(0.001, 0.001), (0.01, 0.05), (0.05, 0.01)])
def test_high_probability_accuracy_holds_for_every_m_exactly(a, rho):
    """Over m = 10^2..10^6 rows, the exact chance that Binomial(m, a) false certificates exceed the
    bound's deficit is <= rho, for the exact quantile and the Bernstein form. Controls: the published
    form a + sqrt(a(1-a)L/m) + L/(3m) exceeds rho for large m (0.0016 at m = 10^4 with
    a = rho = 0.001; it was this function's formula), and the exact quantile minus one exceeds rho
    at every m."""
    from robustcert.results import false_certificate_quantile, high_probability_accuracy

    log_term = math.log(1 / rho)
    published_failures = []
    for m in HIGH_PROBABILITY_ROWS:
        for bound in ("binomial", "bernstein"):
            deficit = 1.0 - high_probability_accuracy(1.0, m, a, rho, bound)
            assert _false_certificate_rate_exceeded(deficit, m, a) <= rho, (bound, m)
        k = false_certificate_quantile(m, a, rho)
        assert _false_certificate_rate_exceeded((k - 1) / m, m, a) > rho  # minimal: one fewer is too few
        published = a + math.sqrt(a * (1 - a) * log_term / m) + log_term / (3 * m)
        if _false_certificate_rate_exceeded(published, m, a) > rho:
            published_failures.append(m)
    if (a, rho) == (0.001, 0.001):
        assert 10_000 in published_failures and 10 ** 6 in published_failures
        assert _false_certificate_rate_exceeded(
            a + math.sqrt(a * (1 - a) * log_term / 10_000) + log_term / 30_000, 10_000, a) == \
            pytest.approx(0.0016, abs=1e-4)


def test_high_probability_accuracy_values_and_arguments():
    from robustcert.errors import InvalidArgumentError
    from robustcert.results import false_certificate_quantile, high_probability_accuracy

    # m = 500, a = rho = 0.001: P(Bin(500, 0.001) > 4) = 1.7e-4 <= 0.001 < P(> 3) = 1.7e-3
    assert false_certificate_quantile(500, 0.001, 0.001) == 4
    assert high_probability_accuracy(0.6, 500) == pytest.approx(0.6 - 4 / 500)
    assert high_probability_accuracy(0.6, 500, bound="bernstein") < high_probability_accuracy(0.6, 500)
    assert high_probability_accuracy(0.6, 5000) > high_probability_accuracy(0.6, 500)
    for kwargs in ({"rows": 0}, {"a": 0.0}, {"rho": 1.0}, {"bound": "hoeffding"}):
        with pytest.raises(InvalidArgumentError):
            high_probability_accuracy(0.6, **{"rows": 500, **kwargs})