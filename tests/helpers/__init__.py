"""Test helpers: small real ONNX models trained with scikit-learn, and Parquet data to score."""
