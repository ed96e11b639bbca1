"""What users write: `Dep`, `Out`, `StageSpec`, `Pipeline` and the loaders."""
