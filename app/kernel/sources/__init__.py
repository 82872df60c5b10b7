"""Reading tables where they live: Parquet and CSV files under configured roots, and tables or
queries of configured PostgreSQL databases, in chunks of pyarrow tables.

Shared mechanics of every module that reads a user's data (a feature view's source, a batch
job's input): which paths and databases may be read (:class:`SourcePolicy`), whether a column
holds what a reader needs (:func:`check_columns`), and the readers (:class:`FileReader`,
:class:`DatabaseReader`). What the columns mean stays with the module. Reading blocks: callers
run it in a thread.
"""

from app.kernel.sources._columns import check_columns, fits
from app.kernel.sources._database import DatabaseReader
from app.kernel.sources._files import FileReader
from app.kernel.sources._policy import (
    Chunk,
    SourcePolicy,
    SourceReader,
    import_arrow,
    shown_text,
)

__all__ = [
    "Chunk",
    "DatabaseReader",
    "FileReader",
    "SourcePolicy",
    "SourceReader",
    "check_columns",
    "fits",
    "import_arrow",
    "shown_text",
]
