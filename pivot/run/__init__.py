"""Running stages: lock files, run keys and decisions, the view of the remote a run uses,
the scheduler and its executor.
"""
