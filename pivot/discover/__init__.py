"""Finding pipelines: loading one file in isolation, producers of a path, the graph, a
command's scope.
"""
