"""Pure numerics: exposures in memory in, catalogs and footprints in memory out.

Nothing here knows about HTTP, databases or files; `app.io` reads and writes, `app.cli` and the
service call in.
"""
