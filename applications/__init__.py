"""Model builders for the paper's architectures (installed as keras_topo.applications)."""
