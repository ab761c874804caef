"""REST adapter: FastAPI routers for `/api/v1`, problem+json errors, bearer auth."""
