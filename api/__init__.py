"""hqstream gateway: FastAPI REST (reads Redis) + WebSocket push (consumes Kafka).

Never writes to Redis or Kafka, and never imports producers/ or streams/:
it talks to them only through the topics and keys named in schemas/.
"""
