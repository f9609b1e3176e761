"""fedsite's shared core: CLI, config, model directories, Task protocol, export and compression.

The core never imports a vertical directly; verticals are reached through `common.registry`, so a
fourth vertical is one folder and one registry line.
"""

__version__ = "0.1.0"
