"""One module per output format, named `<from>2<to>`. Conversion only: no Prefect, no S3.

Each module exposes plain functions that take paths and options and return what they wrote.
"""
