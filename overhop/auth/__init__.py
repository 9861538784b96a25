"""Authentication and authorization rules, pure: SCRAM-SHA-256 (`scram`), user records and
names (`users`), permissions as verbs on queue-name patterns (`permissions`)."""
