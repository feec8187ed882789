"""Bundle-local glue for lesion_classification: datalists, the benchmark runner, results table."""
