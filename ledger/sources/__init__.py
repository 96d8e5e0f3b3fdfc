"""Where records come from: event files (JSON Lines, Avro containers) and Kafka topics."""
