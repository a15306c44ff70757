"""The HTTP API: app factory, middleware, routes and error mapping."""
