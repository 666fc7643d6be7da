"""Running jobs: the Dramatiq queue, the child-process runner, heartbeats and the reconciler."""
