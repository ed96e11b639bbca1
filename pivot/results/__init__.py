"""Results across revisions: metric and param values and plot data read from git
revisions or the workspace, their differences, and the plots page."""
