"""Where events come from: files (JSON Lines, Avro containers) and Kafka."""
