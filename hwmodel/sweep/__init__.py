"""The sweep: its specification (spec: the settings, each declared once as a dataclass field; loading: the spec
from a TOML file or options, checked; validators: the sweep's own validators) and the run that fills a report
folder (sweep: accuracy points, synthesis, results.csv)."""
