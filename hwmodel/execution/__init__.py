"""Where and how jobs run and what keeps their results: executors and worker pools (jobs), the content-addressed
result cache (cache), the determinants' hash (provenance), Ctrl-C and SIGTERM handling (interrupt)."""
