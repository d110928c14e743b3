"""recsys.admin.v1: generated from admin.proto by `make protos`; do not edit."""
