"""The data layer: schema, engines, sessions and migrations."""
