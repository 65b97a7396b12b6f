"""Reports: statistics (stats), the sweep report (report: tables, prose, plots, index.html, README block), the
per-layer heat map (heatmap), the silicon cost plots (cost_plots) and the paper-claim tables (paper_claim)."""
