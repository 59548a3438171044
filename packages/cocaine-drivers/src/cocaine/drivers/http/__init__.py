"""The ``http-server`` driver: HTTP/1.1 and 1.0 on the app's reactor (docs/http.md)."""
