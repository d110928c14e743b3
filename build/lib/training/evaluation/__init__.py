"""Accuracy and beyond-accuracy metrics, and full-catalogue ranking evaluation."""
