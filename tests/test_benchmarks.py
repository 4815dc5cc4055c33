"""The benchmarks run, and what they print holds (the full runs are in benchmarks/README.md)."""

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import requires_mnist

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@requires_mnist
def test_implicit_memory_stays_flat_while_unrolled_grows(tmp_path):
    figures = tmp_path / "figures.json"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "implicit_vs_unrolled.py"), "--iterations", "10", "100",
         "--json", str(figures)],
        capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "implicit: working memory" in completed.stdout
    results = json.loads(figures.read_text())["results"]
    memory = {(row["method"], row["iterations"]): row["temp_bytes"] for row in results}
    assert memory["implicit", 10] == memory["implicit", 100]
    assert memory["unrolled", 100] > 2 * memory["unrolled", 10]


@requires_mnist
def test_the_protocol_benchmark_reports_each_initialization_beside_the_published_score(tmp_path):
    figures = tmp_path / "figures.json"
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "convnet_protocol.py"), "--datasets", "mnist",
         "--sizes", "1", "--seeds", "2", "--epochs", "1", "--augment", "on",
         "--json", str(figures)],
        capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "64.9 +- 3.5" in completed.stdout  # DC's published random-real score
    (row,) = json.loads(figures.read_text())["results"]
    assert row["dataset"] == "mnist" and row["images_per_class"] == 1 and row["augment"]
    assert len(row["accuracies"]) == 2 and all(0 <= a <= 1 for a in row["accuracies"])
    assert row["protocol"]["epochs"] == 1 and row["peak_rss_bytes"] > 0
