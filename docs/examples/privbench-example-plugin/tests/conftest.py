# privbench's test kit: fixtures (tiny_model, tiny_dataset, plugin_registry, privbench_cli).
pytest_plugins = ["privbench.testing"]
