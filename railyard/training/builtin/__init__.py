"""Built-in workflows; every module here is imported by railyard.training.workflow.load_workflows()."""
