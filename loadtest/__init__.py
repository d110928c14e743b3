"""Load tests: locust users speaking gRPC through the SDK (locustfile.py) and the bounded runner (__main__)."""
