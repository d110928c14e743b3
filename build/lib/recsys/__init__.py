"""Generated gRPC contract packages (see protos/recsys/v1/recommender.proto; `make protos`)."""
