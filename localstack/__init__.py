"""The local stack: real Kafka-protocol, S3 and Milvus servers on loopback for development, the demo and the tests."""
