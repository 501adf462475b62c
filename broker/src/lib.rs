//! strom-broker: a Kafka-compatible broker.
