"""MovieLens data pipeline, models (SAE, RBM, two-tower, popularity), evaluation and MLflow tracking."""
