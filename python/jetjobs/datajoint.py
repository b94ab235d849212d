"""Compute DataJoint tables in jetjobs workers, with DataJoint's own make().

    python3 -m jetjobs.datajoint lab_pipeline.Analysis [lab_pipeline.Spikes ...]

is a persistent jetjobs handler: the worker starts it once per slot (``worker --datajoint
lab_pipeline.Analysis``, or ``"datajoint": "lab_pipeline.Analysis"`` in a table's entry of the
configuration). It imports the pipeline modules once, connects as DataJoint does (dj.config,
DJ_HOST, DJ_USER, DJ_PASS), and computes each key it is sent as ``populate(key,
reserve_jobs=False)`` would: DataJoint's transaction, the "already computed" check, make(),
the commit, and the hidden job metadata when the table has it. jetjobs holds the job's
reservation; DataJoint's own jobs table is not touched.

A failed make() is reported as DataJoint reports it: "ValueError: ..." as the message, the
traceback as the stack. A lost database connection, ConnectionError or jetjobs.Retry are
retried with backoff. DataJoint's log goes to stderr, which the worker logs and keeps in the
stack of the job it belongs to; stdout is the protocol's.
"""

import base64
import datetime
import decimal
import importlib
import os
import sys
import uuid

import jetjobs

USAGE = "usage: python3 -m jetjobs.datajoint module.Class [module.Class ...]"


def _load(spec):
    """Import "package.module.Class" and return an instance of the class."""
    module_name, _, class_name = spec.rpartition(".")
    if not module_name or not class_name:
        raise SystemExit(f"jetjobs.datajoint: {spec!r} is not of the form module.Class\n{USAGE}")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if cls is None:
        raise SystemExit(f"jetjobs.datajoint: module {module_name} has no {class_name}")
    if not callable(getattr(cls, "make", None)) or not callable(getattr(cls, "populate", None)):
        raise SystemExit(f"jetjobs.datajoint: {spec} is not a DataJoint Computed or Imported table (no make or populate)")
    return cls()


def _converter(attr):
    """How a key value in JSON becomes the value DataJoint's make() expects for attr."""
    sql_type = (attr.type or "").lower()
    if attr.uuid:
        return uuid.UUID
    if sql_type == "date":
        return datetime.date.fromisoformat
    if sql_type.startswith(("datetime", "timestamp")):
        return datetime.datetime.fromisoformat
    if sql_type.startswith("decimal"):
        return decimal.Decimal
    if "binary" in sql_type or "blob" in sql_type:
        return base64.b64decode
    return None


class Adapter:
    """The handler: computes one key of one of its tables per job."""

    def __init__(self, tables):
        #: "schema.table" -> the table's instance
        self.tables = {f"{t.database}.{t.table_name}": t for t in tables}
        self._converters = {}
        from datajoint.errors import LostConnectionError

        self._transient = (LostConnectionError, ConnectionError)

    def _key(self, name, table, key):
        converters = self._converters.get(name)
        if converters is None:
            attributes = table.heading.attributes
            converters = {a: c for a in table.primary_key if a in attributes and (c := _converter(attributes[a]))}
            self._converters[name] = converters
        return {k: converters[k](v) if k in converters and isinstance(v, str) else v for k, v in key.items()}

    def __call__(self, job):
        table = self.tables.get(job.table)
        if table is None:
            raise LookupError(
                f"{job.table} is not among the tables of this handler ({', '.join(sorted(self.tables))}): "
                f"give its class with --datajoint or the table's \"datajoint\" entry"
            )
        key = self._key(job.table, table, job.key)
        connection = table.connection
        if connection.in_transaction:  # left open by an earlier failure: never computed inside
            connection.cancel_transaction()
        try:
            populate1 = getattr(table, "_populate1", None)
            if populate1 is not None:
                # DataJoint's own computation of one key: what populate(key) runs for each key.
                populate1(key, jobs=None, suppress_errors=False, return_exception_objects=False)
            else:
                table.populate(key, reserve_jobs=False, suppress_errors=False)
        except self._transient as error:
            raise jetjobs.Retry(jetjobs._error_message(error)) from error
        return None  # DataJoint inserted the rows itself, in its transaction


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if not args or any(a.startswith("-") for a in args):
        print(USAGE, file=sys.stderr)
        return 2
    # Before DataJoint or the pipeline can print: DataJoint logs to stdout by default.
    jetjobs.protocol_stream()
    os.environ.setdefault("DJ_LOG_STREAM", "stderr")
    tables = [_load(spec) for spec in args]
    jetjobs.serve(Adapter(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
