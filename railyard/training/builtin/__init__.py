"""Built-in workflows; every module here is imported by
railyard.training.registry.load_workflows()."""
