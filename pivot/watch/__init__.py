"""`pivot run --watch`: the paths a scope depends on, the file-system watcher, and the
loop that runs the scope again after each change."""
