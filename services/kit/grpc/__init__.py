"""gRPC server bootstrap for every service: health, reflection, interceptors, shutdown."""
