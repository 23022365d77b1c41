"""The baseline and the inputs: baseline_task_queue_v2.py stands alone (run it as a script; it imports
nothing of the project), generate_tasks.py makes task files, sample_tasks_small.json is a small one."""
