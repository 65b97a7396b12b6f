"""The sweep: its specification (spec: TOML file, options, defaults) and the run that fills a report folder
(sweep: accuracy points, synthesis, results.csv)."""
