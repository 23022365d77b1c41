"""Task Queue Lab: a thread-pool task queue engine (lab.engine) and the lab that measures it."""
