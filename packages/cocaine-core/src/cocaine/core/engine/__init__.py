"""The engine: one per app, owning its drivers, job queue, worker pool and pubsub socket."""
