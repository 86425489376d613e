"""Where rows come from: Parquet files and Kafka topics."""
