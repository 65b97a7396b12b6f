"""Each named decision of the toolkit has one definition (issue 23 item 5): the reference accumulator, the row
grouping key, the accuracy keys, the model and target lists are each written as a literal in exactly one module
of the packages; every other module derives or imports them. Checked from the sources with ``ast``, and on a
planted second definition, so the check cannot pass by finding nothing."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lba_core", "rtl", "lba_train", "hwmodel")
#: decision name -> the module that defines it
DECISIONS = {
    "REFERENCE_ACC": "hwmodel/workloads/comparison.py",
    "GROUP_COLUMNS": "hwmodel/workloads/comparison.py",
    "ACCURACY_KEYS": "lba_train/train.py",
    "MODEL_NAMES": "lba_train/models.py",
    "MODELS": "hwmodel/workloads/minilm.py",  # the digits models are MODEL_NAMES; the sweep's list is derived
    "TARGETS": "hwmodel/synthesis/synth.py",  # the Yosys flows; the sweep's list is known_targets()
}


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def literal_definitions(sources: dict[str, str], name: str) -> list[str]:
    """The modules that assign ``name`` a literal value (anywhere: module level or in a class)."""
    found = []
    for path, text in sources.items():
        if name not in text:  # most files never mention it: no parse
            continue
        for node in ast.walk(ast.parse(text)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            value = getattr(node, "value", None)
            if value is not None and any(isinstance(t, ast.Name) and t.id == name for t in targets) and _is_literal(value):
                found.append(path)
    return found


@functools.cache
def package_sources() -> dict[str, str]:
    return {str(path.relative_to(ROOT)): path.read_text(encoding="utf-8")
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def test_each_decision_has_one_definition():
    sources = package_sources()
    for name, home in DECISIONS.items():
        assert literal_definitions(sources, name) == [home], name


def test_a_second_definition_is_found():
    sources = {**package_sources(), "hwmodel/report/planted.py": 'REFERENCE_ACC = "fp32"\nGROUP_COLUMNS: tuple = ("input",)\n'}
    assert literal_definitions(sources, "REFERENCE_ACC") == ["hwmodel/workloads/comparison.py", "hwmodel/report/planted.py"]
    assert len(literal_definitions(sources, "GROUP_COLUMNS")) == 2


def test_the_sweep_and_report_read_the_one_definition():
    from hwmodel.report import data
    from hwmodel.sweep import spec
    from hwmodel.synthesis.flows.targets import known_targets
    from hwmodel.workloads import comparison, registry
    from lba_train.models import MODEL_NAMES

    assert data.REFERENCE_ACC is comparison.REFERENCE_ACC and data.GROUP_COLUMNS is comparison.GROUP_COLUMNS
    assert spec.TARGETS == known_targets() and spec.MODELS == registry.MODELS
    assert set(MODEL_NAMES) <= set(spec.MODELS)
