"""The task-agnostic training machinery. Nothing here imports segdet.tasks."""
