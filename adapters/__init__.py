"""Source adapters: the back-offices whose open tickets become Fragment tasks."""
