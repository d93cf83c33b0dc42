"""Session-state keys. Keys are "<page>.<name>"; session state holds ids and choices, never tensors."""

DEVICE = "global.device"
SEED = "global.seed"
WORKSPACE = "global.workspace"
FIGURES = "figures.items"  # list of figure ids added to the Figures page
