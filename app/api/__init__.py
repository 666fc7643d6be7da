"""The HTTP API: FastAPI app factory, routers, schemas and error rendering."""
