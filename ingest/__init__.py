"""Transport and contracts: message schemas, profiles, validation, the bus (in-process and Kafka),
dead letters, and readers for historical logs. Imports nothing else of motorwatch."""
