"""Task Queue Lab: a thread-pool task queue engine (tqengine) and the lab that measures it."""
