"""`exapt transfer-map`: which source domain transfers to which target domain.

    domains.py   load the domains, check they share one label set, split each once
    runner.py    one fit per (source, seed) in one process, scored on every domain; resumable
    report.py    transfer-map.csv, transfer-map.png (heat map), transfer-map.md
    cli.py       the subcommand's arguments
"""
from .runner import TransferMap, transfer_map

__all__ = ["transfer_map", "TransferMap"]
