"""The import graph stays one-way (DESIGN.md): methods declare pieces and never import the trainer,
the runner or the sweeps; the reader of prepared data never imports its writer (and with it PyAV,
torchaudio and OpenCV); a method imports no other method (cpfs_direct is cpfs under other
presets: the paper's own baseline, one file that re-exports cpfs)."""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "raysup"


def imports(path: pathlib.Path) -> set[str]:
    """Every raysup module ``path`` imports (``from raysup.x import y`` counts as raysup.x and raysup.x.y)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("raysup")}


METHOD_FILES = sorted(p for p in (ROOT / "methods").glob("*.py") if p.stem not in ("__init__", "base"))


@pytest.mark.parametrize("path", METHOD_FILES, ids=lambda p: p.stem)
def test_a_method_imports_no_trainer_runner_sweep_or_other_method(path):
    got = imports(path)
    assert not {m for m in got if m.split(".")[1:2] in (["train"], ["runner"], ["sweep"], ["cli"], ["protocols"])}, got
    siblings = {m.split(".")[2] for m in got if m.startswith("raysup.methods.") and len(m.split(".")) > 2} - {"base"}
    assert siblings <= ({"cpfs"} if path.stem == "cpfs_direct" else set()), siblings


def test_the_reader_of_prepared_data_does_not_import_the_writer():
    for name in ("ingest.py", "schema.py", "codec.py", "tables.py"):
        assert not {m for m in imports(ROOT / "data" / name) if m.startswith(("raysup.data.prepare", "raysup.data.decode"))}, name


def test_train_and_features_sit_below_the_methods():
    for name in ("train.py", "features.py", "cluster_features.py"):
        above = {m for m in imports(ROOT / name) if m.startswith(("raysup.methods", "raysup.runner", "raysup.protocols"))}
        assert not above, (name, above)
    assert not {m for m in imports(ROOT / "train.py") if m.startswith("raysup.features")}  # not even for a type alias
    assert not {m for m in imports(ROOT / "features.py") if m.startswith("raysup.cluster_features")}


def _top_level_imports(path: pathlib.Path) -> set[str]:
    """The raysup modules ``path`` imports at its top (not inside functions: the lazy ones)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("raysup")}


def test_the_sweeps_share_the_error_handling_below_the_command_line():
    """raysup.errors (the one-line errors, exit codes, log files) sits below both raysup.cli and
    the experiment scripts' command line (raysup.sweep.experiment), which never import the CLI."""
    for path in sorted((ROOT / "sweep").glob("*.py")):
        assert not {m for m in imports(path) if m.startswith("raysup.cli")}, path.name
    assert not {m for m in imports(ROOT / "errors.py") if m.startswith(("raysup.cli", "raysup.sweep"))}
    # the CLI imports its commands lazily (`raysup --help` loads neither torch nor Ray)
    assert _top_level_imports(ROOT / "cli.py") <= {"raysup", "raysup.config", "raysup.data.storage", "raysup.errors", "raysup.progress", "raysup.runtime"}
