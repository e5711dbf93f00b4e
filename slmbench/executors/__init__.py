"""Executors: where and how jobs run. `local` (default) runs each job in its own process."""
