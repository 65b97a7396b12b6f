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
    "ACCURACY_KEYS": "lba_train/finetuning.py",
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


# ------------------------------------------------------------------- result columns: one schema, no name matching
#: The modules that read result columns: they select columns through hwmodel/synthesis/columns.py.
COLUMN_READERS = ("hwmodel/report", "hwmodel/synthesis/area.py", "hwmodel/synthesis/silicon.py")
#: (module, receiver) of string tests that are not on column names: prose and file text.
NOT_COLUMN_NAMES = {("hwmodel/report/prose.py", "text"), ("hwmodel/report/data.py", "text")}


def name_matching(path: str, text: str) -> list[str]:
    """Where ``text`` matches strings by prefix, suffix, substring, split on '_' or regular expression: each as
    "path:line: source" (the receivers in NOT_COLUMN_NAMES excepted)."""
    found = []
    for node in ast.walk(ast.parse(text)):
        hit = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = ast.unparse(node.func.value)
            if node.func.attr in ("startswith", "endswith", "removeprefix", "removesuffix") and \
                    (path, receiver) not in NOT_COLUMN_NAMES:
                hit = node
            elif node.func.attr in ("split", "rsplit", "partition") and node.args and \
                    isinstance(node.args[0], ast.Constant) and node.args[0].value == "_":
                hit = node
            elif receiver == "re":
                hit = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and any(alias.name == "re" for alias in node.names):
            hit = node
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str) \
                and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) and \
                any(isinstance(right, ast.Name) and "col" in right.id for right in node.comparators):
            hit = node
        if hit is not None:
            found.append(f"{path}:{hit.lineno}: {ast.unparse(hit)}")
    return found


def column_reader_sources() -> dict[str, str]:
    sources = package_sources()
    return {path: text for path, text in sources.items() if path.startswith(COLUMN_READERS)}


def test_report_code_never_matches_column_names():
    sources = column_reader_sources()
    assert "hwmodel/report/tables.py" in sources and "hwmodel/synthesis/area.py" in sources
    assert [hit for path, text in sources.items() for hit in name_matching(path, text)] == []


def test_a_planted_name_match_is_found():
    planted = ('import re\nblocks = [c for c in df.columns if c.startswith("block_") and c.endswith("_ge")]\n'
               'fpga = [c for c in df if c.split("_")[0] == "ice40"]\nx = "_um2" in column\n')
    assert len(name_matching("hwmodel/report/planted.py", planted)) == 5
    assert name_matching("hwmodel/report/prose.py", 'ok = text.startswith("<")\n') == []


def test_the_column_schema_is_declared_once():
    """Every table's columns are declared in hwmodel/synthesis/columns.py and nowhere else: the report's and the
    workloads' column lists are read from it, and each declaration names a kind and a unit field."""
    from hwmodel.report import data, heatmap
    from hwmodel.synthesis import columns

    assert literal_definitions(package_sources(), "SCHEMA") == []  # built from the declarations, not a literal
    for name in ("KINDS", "RATIO_FIGURES", "ASIC_FIGURES", "PNR_FIGURES", "STAT_PHASES", "MINILM_METRICS"):
        assert literal_definitions(package_sources(), name) == ["hwmodel/synthesis/columns.py"], name
    # the simulator counts the events (lba_train, which hwmodel's report does not import: no torch there)
    assert literal_definitions(package_sources(), "EVENTS") == ["lba_train/events.py", "hwmodel/synthesis/columns.py"]
    assert heatmap.COLUMNS == tuple(columns.SCHEMA[columns.LAYER_EVENTS]) and heatmap.EVENTS is columns.EVENTS
    assert data.PHASES is columns.STAT_PHASES
    for table, declared in columns.SCHEMA.items():
        for name, column in declared.items():
            assert column.name == name and column.kind in columns.KINDS and column.meaning, (table, name)
            assert not column.needs or column.needs in declared, (table, name)


def test_the_report_never_names_a_workload():
    """The report loops over the workloads' sections (issue 23 item 3): no string in hwmodel/report is a
    workload's registry name or section title."""
    from hwmodel.workloads import registry

    names = {workload.name for workload in registry.WORKLOADS} | {"Digits", "MiniLM", "Language model"}
    found = [(path, node.value) for path, text in package_sources().items() if path.startswith("hwmodel/report/")
             for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Constant) and node.value in names]
    assert found == []
    planted = ast.parse('if section.name == "lm":\n    pass\n')
    assert [node.value for node in ast.walk(planted) if isinstance(node, ast.Constant) and node.value in names] == ["lm"]
