"""Consumer groups (classic protocol): the coordinator and its store in __consumer_offsets."""
