"""Gateway: the REST API for the app and the orchestrator of the three gRPC services."""
