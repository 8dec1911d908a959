"""What the server keeps on disk: the embedded database, the catalog, the dataset files.

Holds the SQLite database (`database`), the catalog of datasets, reports and budgets,
and of double-blind datasets' masking and hop attempts (`catalog`), the Arrow IPC files of
committed datasets (`dataset_files`), their copies by prefix range for the Spark engine
(`range_copies`) and the mapping of disk trouble to clear refusals (`refusals`). Imports
the privacy and matching value types it persists; never the use cases, the audit log or
gRPC.
"""
