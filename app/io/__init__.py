"""Reading and writing exposures, catalogs and footprints."""
