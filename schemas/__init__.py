"""Shared contracts of hqstream: Avro schemas, value models, serde, and the
names of every Kafka topic and Redis key.

This package is imported by producers/, streams/ and api/; it imports none of
them. The three services talk only through the topics and keys named here.
"""
