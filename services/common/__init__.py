"""Cross-cutting code shared by every service: config, logging, metrics, gRPC server/client."""
