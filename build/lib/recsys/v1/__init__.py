"""recsys.v1: generated from recommender.proto by `make protos`; do not edit."""
