"""The bottom layer: settings and other pieces every package may import.

Nothing here imports another surfacer package, so `features`, `models`, `training`,
`serving`, `discovery` and `simulator` can all depend on it without cycles.
"""
