"""Built-in workflows; every module here is imported by railyard.workflows.load_workflows()."""
