"""Use cases behind the API: exposures, jobs and results. Services own the transactions."""
