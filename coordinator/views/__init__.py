"""Request handlers of the coordinator, one module per resource."""
