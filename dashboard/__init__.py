"""The operator dashboard: live workers, queues and tasks with controls (``python -m dashboard``)."""
