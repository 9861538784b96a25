"""The broker's domain: queues, jobs and their statuses, workers, deliveries, dispatch."""
