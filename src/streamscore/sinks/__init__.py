"""Where scores go: Parquet files and Kafka topics."""
