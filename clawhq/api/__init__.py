"""The REST API: a thin layer over services and the controller."""
