"""The Kafka wire protocol: generated message classes (``_messages``), the schema-driven
codec (``codec``), primitives (``primitives``) and framing helpers (``framing``)."""
